"""Settings of the model workers under `args:` in serve_config.yaml: each model's replicas (GPU share,
batching, autoscaling, speed-ups) and the text encoder's. Part of the config (serve_apps/config.py
re-exports them), apart so that each module stays small."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingArgs(StrictModel):
    """Ray Serve autoscaling, per deployment. min_replicas 0 scales to zero when idle."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> AutoscalingArgs:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class BatchingArgs(StrictModel):
    """Live knobs of @serve.batch, sent as user_config so they change without a restart."""

    max_batch_size: int = Field(8, ge=1, le=64)
    batch_wait_timeout_s: float = Field(0.05, ge=0, le=10)


class AccelerationArgs(StrictModel):
    """Speed-ups of one model's replicas (deployments/acceleration.py). `auto`: on where they help (a CUDA GPU),
    off on a CPU; every one can be forced on or off. None changes the API's default output format."""

    compile: bool | Literal["auto"] = Field(
        "auto", description="regional torch.compile of the transformer's repeated blocks (and the VAE decoder)"
    )
    quantization: Literal["none", "fp8"] = Field(
        "none", description="fp8: torchao dynamic float8 per-row, CUDA GPUs of compute capability 8.9+ only"
    )
    attention_backend: Literal["auto", "flash", "cudnn", "efficient", "math"] = Field(
        "auto", description="PyTorch SDPA backend; auto lets torch choose"
    )
    fast_decode: bool | Literal["auto"] = Field("auto", description="VAE decode in bf16 (compiled with compile)")
    gpu_jpeg: bool | Literal["auto"] = Field(
        "auto", description="JPEG encoded on the GPU (torchvision's nvJPEG); auto: when torchvision is installed"
    )
    warmup_sizes: list[tuple[int, int]] | None = Field(
        None,
        description="[width, height] sizes generated once at replica start so no request compiles; "
        "default: the model's native size when compile is on, none otherwise",
    )
    truncate_text_encoder: bool = Field(
        True, description="run the text encoder only up to the last layer the pipeline reads; same embeddings"
    )
    encode_threads: int = Field(
        1, ge=0, le=16, description="threads encoding images while the next pass runs; 0 encodes inline"
    )
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level of PNG output; 1 is fast, 6 PIL's default")

    @field_validator("warmup_sizes")
    @classmethod
    def _sizes_servable(cls, sizes: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        from deployments.contracts import MAX_PIXELS, MIN_SIDE_PX, SIDE_MULTIPLE_PX

        for width, height in sizes or []:
            if min(width, height) < MIN_SIDE_PX or width % SIDE_MULTIPLE_PX or height % SIDE_MULTIPLE_PX:
                raise ValueError(
                    f"warm-up size {width}x{height}: sides must be multiples of {SIDE_MULTIPLE_PX} and at least "
                    f"{MIN_SIDE_PX}, as requests' are, e.g. [1024, 1024]"
                )
            if width * height > MAX_PIXELS:
                raise ValueError(
                    f"warm-up size {width}x{height} is over {MAX_PIXELS} pixels, more than a request may ask"
                )
        return sizes


class ModelArgs(StrictModel):
    """One denoiser deployment: a model variant with its weights and placement, served under its key's name."""

    variant: str | None = Field(
        None,
        description="the spec this model is (deployments/registry.py), e.g. flux-2-klein-4b, when the served "
        "name is the operator's own; default: the served name itself",
    )
    weights: str = "emulated"
    num_gpus: float = Field(0.5, ge=0, le=8)
    num_cpus: float = Field(1.0, ge=0)
    max_images_per_forward: int = Field(12, ge=1, le=64)
    max_pixels_per_forward: int = Field(
        12 * 1024 * 1024,
        ge=64 * 64,
        description="pixels of all images in one latent batch (and VAE decode); one image larger than this runs alone",
    )
    max_queued_requests: int = Field(
        64, ge=1, description="per ingress replica, waiting for a busy denoiser; over it the job waits its turn"
    )
    reference_cache_bytes: int = Field(
        512 * 1024**2,
        ge=0,
        description="reference images kept prepared on each replica (preprocessed pixels and VAE latents), in "
        "bytes; 0 keeps none (a 1 MP reference takes 14 MB)",
    )
    deterministic: bool = Field(
        False,
        description="a rerun makes the same bytes: each request runs in passes of its own (never batched with "
        "another's) with deterministic kernels; costs the cross-request batching (bench/determinism.py)",
    )
    device: str = "auto"
    dtype: str = "auto"
    batching: BatchingArgs = BatchingArgs()
    autoscaling: AutoscalingArgs = AutoscalingArgs()
    acceleration: AccelerationArgs = AccelerationArgs()

    @model_validator(mode="after")
    def _gpu_speedups_on_a_gpu(self) -> ModelArgs:
        """Refused here, before any replica starts: GPU-only speed-ups forced on a CPU placement."""
        on_cpu = self.device == "cpu" or (self.device == "auto" and self.num_gpus == 0)
        if not on_cpu:
            return self
        accel = self.acceleration
        if accel.quantization == "fp8":
            raise ValueError(
                "acceleration.quantization fp8 needs a CUDA GPU (compute capability 8.9+) but this model runs on "
                f"the CPU (device {self.device}, num_gpus {self.num_gpus:g}); set quantization: none or give it a GPU"
            )
        if accel.attention_backend in ("cudnn", "efficient"):
            raise ValueError(
                f"acceleration.attention_backend {accel.attention_backend} runs only on a CUDA GPU but this model "
                "runs on the CPU; use auto, flash or math"
            )
        return self


class EncoderArgs(StrictModel):
    """Text encoder deployments, one per encoder family."""

    num_gpus: float = Field(0.0, ge=0, le=8)
    num_cpus: float = Field(0.5, ge=0)
    cache_bytes: int = Field(
        1024**3, ge=64 * 1024**2, description="prompt embeddings kept, in bytes (a real 4B embedding is 7.9 MB in bf16)"
    )
    max_queued_requests: int = Field(256, ge=1, description="per ingress replica, waiting for a busy encoder")
    batching: BatchingArgs = BatchingArgs(max_batch_size=16, batch_wait_timeout_s=0.01)
    autoscaling: AutoscalingArgs = AutoscalingArgs()
