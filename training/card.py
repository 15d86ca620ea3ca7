"""A model card README.md for a trained adapter, ready for the Hugging Face hub."""

from __future__ import annotations

LICENSE_IDS = {"Apache-2.0": "apache-2.0", "FLUX Non-Commercial License": "other"}


def model_card(metadata: dict, losses: list[float]) -> str:
    trigger = metadata["trigger_word"]
    tags = ["lora", "diffusers", "flux2", "flux2-klein", "text-to-image", *metadata.get("tags", [])]
    first, last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    return f"""---
base_model: {metadata["base_model_repo"]}
library_name: diffusers
license: {LICENSE_IDS.get(metadata["license"], "other")}
instance_prompt: {trigger}
tags:
{chr(10).join(f"- {tag}" for tag in tags)}
---

# {trigger}: a LoRA for FLUX.2 [klein] ({metadata["base_model"]})

- **Base model**: [{metadata["base_model_repo"]}](https://huggingface.co/{metadata["base_model_repo"]}); it fits
  only this variant (a 4B adapter does not fit 9B, a FLUX.1 adapter fits neither).
- **Trigger word**: `{trigger}`; put it in the prompt to activate the adapter.
- **License**: {metadata["license"]} (the base model's terms apply).
- **Rank**: {metadata["rank"]}; trained {metadata["training"]["steps"]} steps at
  {metadata["training"]["resolution"]} px, loss {first:.4f} -> {last:.4f}.

## Use with diffusers

```python
import torch
from diffusers import Flux2KleinPipeline

pipe = Flux2KleinPipeline.from_pretrained("{metadata["base_model_repo"]}", torch_dtype=torch.bfloat16).to("cuda")
pipe.load_lora_weights("path/or/repo/of/this/adapter", adapter_name="{trigger}")
image = pipe(prompt="{trigger}, your prompt", num_inference_steps=4, guidance_scale=1.0).images[0]
```

"""
