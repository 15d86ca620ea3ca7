"""Speed-ups of the model workers, each optional, each `auto` by default: on where it helps (a CUDA GPU), off on
a CPU, where compiling costs minutes and FP8 does not exist.

- regional `torch.compile` of the transformer's repeated blocks (diffusers' `compile_repeated_blocks`):
  compile time ~10 s instead of ~60 s, the same kernels in every block;
- FP8 (torchao, dynamic activations, per-row scales) of the transformer blocks' linear layers, on GPUs with
  FP8 tensor cores (compute capability 8.9+: Ada, Hopper, Blackwell);
- the PyTorch SDPA backend attention runs on (flash, cuDNN, memory-efficient, math);
- a fast VAE decode: bf16, and compiled where compile is on;
- warm-up at replica start at the sizes in use, so no user request is the one that compiles;
- the text encoder cut after the last hidden layer the pipeline reads (27 of Qwen3's 36), without LM head.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Literal

import torch

logger = logging.getLogger("flux_serve.acceleration")

Auto = Literal["auto"]
QUANTIZATIONS = ("none", "fp8")
# Our names -> diffusers' attention backends built on torch's scaled_dot_product_attention.
ATTENTION_BACKENDS = {
    "auto": None,  # leave torch's own choice
    "flash": "_native_flash",
    "cudnn": "_native_cudnn",
    "efficient": "_native_efficient",
    "math": "_native_math",
}
FP8_MIN_CAPABILITY = (8, 9)
RECOMPILE_LIMIT = 64  # each (size, batch) the blocks see is one graph; the default 8 would fall back to eager


class AccelerationError(ValueError):
    """A speed-up asked for on hardware or software that cannot give it; the message says what to change."""


@dataclass(frozen=True)
class Acceleration:
    """What config asks for (`auto` where unset); `resolve` turns it into what this device will do."""

    compile: bool | Auto = "auto"
    quantization: str = "none"
    attention_backend: str = "auto"
    fast_decode: bool | Auto = "auto"
    gpu_jpeg: bool | Auto = "auto"
    warmup_sizes: tuple[tuple[int, int], ...] | None = None  # None: the native size where compile is on
    truncate_text_encoder: bool = True
    encode_threads: int = 1
    png_compress_level: int = 1

    @classmethod
    def from_settings(cls, settings: dict) -> Acceleration:
        """From the config's `acceleration:` mapping (serve_apps.config.AccelerationArgs.model_dump())."""
        sizes = settings.get("warmup_sizes")
        return cls(**{**settings, "warmup_sizes": None if sizes is None else tuple(tuple(size) for size in sizes)})

    def resolve(self, device: torch.device) -> Acceleration:
        """Every `auto` decided for `device`; refuses what the device cannot do, saying what to change."""
        cuda = device.type == "cuda"
        if self.quantization not in QUANTIZATIONS:
            raise AccelerationError(f"quantization {self.quantization!r} is not one of {', '.join(QUANTIZATIONS)}.")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise AccelerationError(
                f"attention_backend {self.attention_backend!r} is not one of {', '.join(ATTENTION_BACKENDS)}."
            )
        if self.quantization == "fp8":
            check_fp8(device)
        if not cuda and self.attention_backend in ("cudnn", "efficient"):
            raise AccelerationError(
                f"attention_backend {self.attention_backend} runs only on a CUDA GPU, and this denoiser runs on "
                f"{device.type}; use auto, flash or math here."
            )
        gpu_jpeg = self.gpu_jpeg
        if gpu_jpeg == "auto":
            from deployments.images import gpu_jpeg_available

            gpu_jpeg = cuda and gpu_jpeg_available()
        return replace(
            self,
            compile=cuda if self.compile == "auto" else self.compile,
            fast_decode=cuda if self.fast_decode == "auto" else self.fast_decode,
            gpu_jpeg=gpu_jpeg,
        )

    @property
    def label(self) -> str:
        """Short name of what is on, for benchmark tables: 'eager', 'compile+fp8+fast-decode'."""
        parts = [name for name, on in (("compile", self.compile is True), ("fp8", self.quantization == "fp8")) if on]
        if self.attention_backend != "auto":
            parts.append(f"attn-{self.attention_backend}")
        if self.fast_decode is True:
            parts.append("fast-decode")
        return "+".join(parts) or "eager"


EAGER = Acceleration(compile=False, fast_decode=False, gpu_jpeg=False, warmup_sizes=())


def check_fp8(device: torch.device) -> None:
    if device.type != "cuda":
        raise AccelerationError(
            f"quantization fp8 needs a CUDA GPU with FP8 tensor cores (compute capability 8.9+, e.g. L4, RTX 4090, "
            f"H100); this denoiser runs on {device.type}. Set quantization: none."
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise AccelerationError(
            f"quantization fp8 needs compute capability 8.9+ (Ada, Hopper, Blackwell); "
            f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}. Set quantization: none."
        )
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise AccelerationError(
            "quantization fp8 uses torchao, which is not installed: pip install torchao (or set quantization: none)."
        ) from None


# -- denoiser ---------------------------------------------------------------------------------


def accelerate_denoiser(pipeline, acceleration: Acceleration, device: torch.device) -> None:
    """Apply a resolved `acceleration` to a loaded pipeline's transformer and VAE, in place.

    Order matters: quantize before compiling (the compiled graph must see the FP8 weights).
    """
    transformer, vae = pipeline.transformer, pipeline.vae
    backend = ATTENTION_BACKENDS[acceleration.attention_backend]
    if backend is not None:
        transformer.set_attention_backend(backend)
    if acceleration.quantization == "fp8":
        quantize_fp8(transformer)
    if acceleration.fast_decode and device.type == "cuda" and vae.dtype == torch.float32:
        vae.to(torch.bfloat16)
    if acceleration.compile:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        transformer.compile_repeated_blocks(fullgraph=True)
        if acceleration.fast_decode:
            vae.decoder.compile()


def fp8_quantizable(module: torch.nn.Module, name: str) -> bool:
    """A linear layer of the repeated blocks with sides that are multiples of 16 (what the FP8 matmul needs)."""
    return (
        isinstance(module, torch.nn.Linear)
        and "transformer_blocks." in name
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def quantize_fp8(transformer: torch.nn.Module) -> int:
    """torchao's dynamic FP8 (per-row scales) on the blocks' linear layers; returns how many were converted.

    Only layers in the repeated blocks whose sides are multiples of 16 (what the FP8 matmul needs): the small
    embedders and the final projection stay bf16, where FP8 would cost quality and save nothing.
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    converted = []

    def blocks_linear(module: torch.nn.Module, name: str) -> bool:
        wanted = fp8_quantizable(module, name)
        if wanted:
            converted.append(name)
        return wanted

    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=blocks_linear)
    logger.info("FP8: %d linear layers of the transformer blocks quantized", len(converted))
    return len(converted)


def warm_up(denoiser, acceleration: Acceleration) -> float:
    """One generation per warm-up size with a zero prompt, so compiling happens now and not in a user's
    request; returns the seconds it took (0 when nothing is warmed up)."""
    sizes = acceleration.warmup_sizes
    if sizes is None:
        sizes = ((denoiser.defaults.width, denoiser.defaults.height),) if acceleration.compile else ()
    if not sizes:
        return 0.0
    from deployments.contracts import DenoiseJob, GenerationParams
    from deployments.embedding import WIRE_DTYPE, PromptEmbedding

    started = time.perf_counter()
    width = denoiser.pipeline.transformer.config.joint_attention_dim
    embeds = torch.zeros(denoiser.weights.max_sequence_length, width, dtype=WIRE_DTYPE)
    prompt = PromptEmbedding(denoiser.weights.text_encoder_family, embeds)
    for width_px, height_px in sizes:
        params = GenerationParams.with_defaults(denoiser.defaults, "", width=width_px, height=height_px, seed=0)
        denoiser.generate([DenoiseJob(params, prompt, prompt if params.uses_cfg else None)])
    warmup_s = time.perf_counter() - started
    logger.info("warm-up at %s took %.1f s", ", ".join(f"{w}x{h}" for w, h in sizes), warmup_s)
    return warmup_s


# -- text encoder -----------------------------------------------------------------------------


def truncate_text_encoder(text_encoder: torch.nn.Module, out_layers: tuple[int, ...]) -> int:
    """Drop the decoder layers above the deepest hidden state read, the final norm and the LM head; in place.

    `Flux2KleinPipeline._get_qwen3_prompt_embeds` stacks `hidden_states[k]` for k in out_layers; hidden state k is
    the output of layer k-1, before the final norm. transformers replaces the last hidden state by the normed one
    (`tie_last_hidden_states`), so that is turned off: the kept hidden states are then bit-identical, and the
    encoder does 27/36 of the work without a 0.2-1.2 GB LM head. A short probe prompt checks that, here and now,
    with this transformers version; where they differ the encoder is left whole. Returns the layers kept.
    """
    model, config = text_encoder.model, text_encoder.config
    keep = max(out_layers)
    if keep > len(model.layers):
        raise AccelerationError(
            f"the pipeline reads hidden state {keep} but the text encoder has {len(model.layers)} layers; "
            "check text_encoder_out_layers in the checkpoint's flux_serve.json"
        )
    whole = (model.layers, model.norm, text_encoder.lm_head, config.num_hidden_layers, vars(config).copy())
    expected = _probe(text_encoder, out_layers)
    model.layers = torch.nn.ModuleList(list(model.layers)[:keep])
    config.num_hidden_layers = keep
    config.tie_last_hidden_states = False
    model.norm = torch.nn.Identity()
    text_encoder.lm_head = torch.nn.Identity()  # logits would be prompts x 512 x 151936 floats, never read
    if all(torch.equal(a, b) for a, b in zip(expected, _probe(text_encoder, out_layers))):
        return keep
    model.layers, model.norm, text_encoder.lm_head, config.num_hidden_layers, attributes = whole
    vars(config).clear()
    vars(config).update(attributes)
    logger.warning("text encoder kept whole: cut after layer %d its hidden states differ (transformers version?)", keep)
    return len(model.layers)


def _probe(text_encoder: torch.nn.Module, out_layers: tuple[int, ...]) -> list[torch.Tensor]:
    """The hidden states the pipeline reads, for eight tokens: the same call `encode_prompt` makes."""
    device = next(text_encoder.parameters()).device
    input_ids = torch.arange(1, 9, device=device)[None]
    with torch.inference_mode():
        output = text_encoder(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True, use_cache=False
        )
    return [output.hidden_states[k] for k in out_layers]
