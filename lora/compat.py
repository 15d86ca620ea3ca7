"""Is this adapter for this model? Checked from the tensors and the metadata, before any GPU work.

A LoRA belongs to one base model: its tensors name modules of one transformer and have
that transformer's widths. The target's module shapes come from the denoiser that loaded it
(`lora.shapes`); this check itself needs no torch, so the ingress runs it.
"""

from __future__ import annotations

from lora.adapter_file import AdapterInfo, AdapterMismatch

TRANSFORMER_PREFIX = "transformer."
FOREIGN_PREFIXES = {
    "lora_unet_": "a FLUX.1 or SD adapter in kohya format",
    "lora_te": "an adapter with text-encoder layers (kohya format)",
    "diffusion_model.": "an adapter in ComfyUI/BFL format for another transformer",
    "unet.": "a Stable Diffusion UNet adapter",
}


def check_compatible(adapter_id: str, info: AdapterInfo, model: str, shapes: dict[str, tuple[int, int]]) -> None:
    """Raise AdapterMismatch naming the adapter, what it was made for and what is targeted."""
    made_for = info.metadata.get("base_model")
    if made_for and made_for != model:
        raise AdapterMismatch(
            f"LoRA {adapter_id!r} was made for {made_for}; this request targets {model}. "
            f"Use it with /v1/{made_for}, or pick an adapter trained on {model}."
        )
    for key, shape in info.shapes.items():
        foreign = next((what for prefix, what in FOREIGN_PREFIXES.items() if key.startswith(prefix)), None)
        if foreign:
            raise AdapterMismatch(
                f"LoRA {adapter_id!r} is {foreign} (tensor {key!r}), not a FLUX.2 [klein] adapter; it cannot be used with {model}."
            )
        if not key.startswith(TRANSFORMER_PREFIX) or ".lora_" not in key:
            raise AdapterMismatch(
                f"LoRA {adapter_id!r} has a tensor {key!r} that is not a diffusers transformer LoRA weight."
            )
        module, kind = key[len(TRANSFORMER_PREFIX) :].rsplit(".lora_", 1)
        if module not in shapes:
            raise AdapterMismatch(
                f"LoRA {adapter_id!r} adapts {module!r}, which {model}'s transformer does not have: "
                f"it was made for a different transformer{f' ({made_for})' if made_for else ''}."
            )
        in_features, out_features = shapes[module]
        expected = in_features if kind.startswith("A") else out_features
        actual = shape[1] if kind.startswith("A") else shape[0]
        if actual != expected:
            raise AdapterMismatch(
                f"LoRA {adapter_id!r} does not fit {model}: {module} is {in_features}->{out_features} wide there, "
                f"the adapter's {kind.split('.')[0]} matrix is {shape}. It was made for "
                f"{made_for or 'a transformer of another size'}."
            )
