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

A speed-up that fails on this GPU or software (no Triton, an FP8 kernel missing, nvJPEG absent) is turned off at
replica start with one warning saying what failed and which setting turns it off, and the replica starts without
it (eager at worst): `start_with_fallback`.
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import contextmanager
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
# Each speed-up by name (as `Acceleration.speedups` lists them) and the `acceleration:` settings that turn it off, in
# the order a failed warm-up blames them: the one likeliest to fail on an unfamiliar GPU or software stack first.
SPEEDUP_OFF: dict[str, dict] = {
    "compile": {"compile": False},
    "fp8": {"quantization": "none"},
    "fast_decode": {"fast_decode": False},
    "attention_backend": {"attention_backend": "auto"},
    "gpu_jpeg": {"gpu_jpeg": False},
}
ERROR_CHARS = 300  # of a failure's first line in the warning; an inductor error runs to pages


class AccelerationError(ValueError):
    """A speed-up asked for on hardware or software that cannot give it; the message says what to change."""


class SpeedupFailed(Exception):
    """Applying one speed-up raised (the cause is chained); `speedup` names it."""

    def __init__(self, speedup: str):
        super().__init__(f"{speedup} could not be applied")
        self.speedup = speedup


@contextmanager
def applying(speedup: str):
    """Whatever the block raises becomes SpeedupFailed(speedup), so the start can turn that speed-up off."""
    try:
        yield
    except Exception as error:
        raise SpeedupFailed(speedup) from error


@dataclass(frozen=True)
class Acceleration:
    """What config asks for (`auto` where unset); `resolve` turns it into what this device will do."""

    compile: bool | Auto = "auto"
    quantization: str = "none"
    attention_backend: str = "auto"
    fast_decode: bool | Auto = "auto"
    gpu_jpeg: bool | Auto = "auto"
    warmup_sizes: tuple[tuple[int, int], ...] | None = None  # None: the native size where any speed-up is on
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
    def speedups(self) -> tuple[str, ...]:
        """The speed-ups a resolved acceleration turns on, by name, in SPEEDUP_OFF's order."""
        on = {
            "compile": self.compile is True,
            "fp8": self.quantization == "fp8",
            "fast_decode": self.fast_decode is True,
            "attention_backend": self.attention_backend != "auto",
            "gpu_jpeg": self.gpu_jpeg is True,
        }
        return tuple(name for name in SPEEDUP_OFF if on[name])

    def without(self, speedup: str) -> Acceleration:
        return replace(self, **SPEEDUP_OFF[speedup])

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

    Order matters: quantize before compiling (the compiled graph must see the FP8 weights). A speed-up that raises
    is reported as SpeedupFailed naming it.
    """
    transformer, vae = pipeline.transformer, pipeline.vae
    backend = ATTENTION_BACKENDS[acceleration.attention_backend]
    if backend is not None:
        with applying("attention_backend"):
            transformer.set_attention_backend(backend)
    if acceleration.quantization == "fp8":
        with applying("fp8"):
            quantize_fp8(transformer)
    if acceleration.fast_decode and device.type == "cuda" and vae.dtype == torch.float32:
        with applying("fast_decode"):
            vae.to(torch.bfloat16)
    if acceleration.compile:
        with applying("compile"):
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
    request, and every speed-up on has run once (JPEG, the default format, goes through gpu_jpeg); returns the
    seconds it took (0 when nothing is warmed up: no speed-up on, or `warmup_sizes: []`)."""
    sizes = acceleration.warmup_sizes
    if sizes is None:
        sizes = ((denoiser.defaults.width, denoiser.defaults.height),) if acceleration.speedups else ()
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


def start_with_fallback(denoiser, acceleration: Acceleration) -> tuple[Acceleration, float]:
    """Apply a resolved `acceleration` to the denoiser's freshly loaded pipeline and warm up; returns what is on and
    the warm-up's seconds.

    A speed-up that raises while applied is turned off; one that makes warm-up fail is found by turning the speed-ups
    off one at a time, likeliest first (SPEEDUP_OFF's order). Each one turned off gets one warning, the pipeline is
    reloaded without it (compile, FP8 and bf16 change the modules in place) and warm-up runs again. So a replica
    starts, eager at worst, where compile or FP8 does not work; a failure with every speed-up off is the model's own
    and is raised, as is running out of GPU memory. With `warmup_sizes: []` a compile failure surfaces at the first
    request instead.
    """
    while True:
        try:
            denoiser.apply_acceleration(acceleration)
            return acceleration, warm_up(denoiser, acceleration)
        except SpeedupFailed as failed:
            speedup, error, when = failed.speedup, failed.__cause__, "while applying it"
        except torch.OutOfMemoryError:
            raise
        except Exception as failed:
            if not acceleration.speedups:
                raise
            speedup, error, when = acceleration.speedups[0], failed, f"at warm-up with {acceleration.label}"
        acceleration = acceleration.without(speedup)
        _warn_turned_off(denoiser, speedup, error, when, acceleration)
        del error  # its traceback holds the modules the reload replaces
        if speedup == "compile":
            torch._dynamo.reset()
        denoiser.reload_pipeline()
        gc.collect()


def _warn_turned_off(denoiser, speedup: str, error: BaseException, when: str, now: Acceleration) -> None:
    device = denoiser.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    first_line = (str(error).strip().splitlines() or [""])[0][:ERROR_CHARS]
    settings = ", ".join(f"{key}: {str(value).lower()}" for key, value in SPEEDUP_OFF[speedup].items())
    logger.warning(
        "%s: speed-up %s failed on %s (%s: %s, %s); this replica runs without it (%s). To skip trying it at start, "
        "set models.%s.acceleration.%s in serve_config.yaml.",
        denoiser.variant.name,
        speedup,
        where,
        type(error).__name__,
        first_line,
        when,
        now.label,
        denoiser.variant.name,
        settings,
    )
    logger.debug("%s failed", speedup, exc_info=error)


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
