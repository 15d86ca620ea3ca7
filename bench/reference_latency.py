"""What reference images cost: latency of one image with 0, 1 and 2 references, in-process.

Each reference adds (its pixels / 256) tokens to every step of the image's pass (diffusers'
klein pipeline takes references at up to 1 MP: a 1024x1024 reference adds 4096 tokens), and
is VAE-encoded once per pass. `flux-bench --references 0,1,2` measures the same with these
functions, per variant, size and step count.

    python -m bench.reference_latency                       # tiny emulated model, CPU, 256x256
    python -m bench.reference_latency --weights emulated:real --size 1024 --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time

import numpy as np
from PIL import Image

from bench.runners import SEED, PeakMemory, load_workers
from deployments.contracts import GenerationParams, ReferenceImage
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from serve_apps.jobs.pricing import REFERENCE_AREA_PX, megapixels

MODEL = "flux-2-klein-4b"
PROMPT = "make the background yellow"


class MemoryReferences:
    """Plain reference images made here and kept in memory; `load` is the Denoiser's reference loader."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def make(self, count: int, width: int, height: int) -> tuple[ReferenceImage, ...]:
        refs = []
        for number in range(count):
            buffer = io.BytesIO()
            Image.new("RGB", (width, height), (60 * number, 120, 200)).save(buffer, format="PNG")
            digest = hashlib.sha256(buffer.getvalue()).hexdigest()
            refs.append(ReferenceImage(digest, f"{digest}.png", width, height))
            self.files[refs[-1].name] = buffer.getvalue()
        return tuple(refs)

    def load(self, reference: ReferenceImage) -> Image.Image:
        return Image.open(io.BytesIO(self.files[reference.name]))


def reference_workers(model: str, weights: str, device: str = "auto") -> tuple[TextEncoder, Denoiser, MemoryReferences]:
    """A variant's encoder and denoiser (as the service loads them), the denoiser reading references from memory."""
    references = MemoryReferences()
    encoder, denoiser = load_workers(model, weights, device, reference_images=references.load)
    return encoder, denoiser, references


def reference_latency(
    encoder: TextEncoder,
    denoiser: Denoiser,
    references: MemoryReferences,
    counts: list[int],
    width: int,
    height: int,
    steps: int,
    prompts: list[str],
) -> list[dict]:
    """One row per reference count: tokens per step and the seconds of one image with that many
    references of the output's size (one untimed warm-up, then one timed request per prompt). Every row
    runs at the model's text-to-image guidance, so rows differ by their references alone (a checkpoint's
    `edit_guidance` would otherwise also drop CFG from the rows with references)."""
    pixels_per_token = denoiser.pixels_per_token
    rows = []
    for count in counts:
        refs = references.make(count, width, height)
        jobs = [
            encoder.job(
                GenerationParams.with_defaults(
                    denoiser.defaults,
                    prompt,
                    width=width,
                    height=height,
                    steps=steps,
                    seed=SEED,
                    references=refs,
                    guidance=denoiser.defaults.guidance,
                )
            )
            for prompt in prompts
        ]
        denoiser.generate(jobs[:1])  # warm-up: loads the references and pays first-call costs
        denoise_s, total_s = [], []
        with PeakMemory() as memory:
            for job in jobs:
                started = time.perf_counter()
                [result] = denoiser.generate([job])
                total_s.append(time.perf_counter() - started)
                denoise_s.append(result.timings_s["denoise"])
        image_tokens = (width // pixels_per_token) * (height // pixels_per_token)
        reference_tokens = sum(min(REFERENCE_AREA_PX, ref.width * ref.height) for ref in refs) // pixels_per_token**2
        input_mp, output_mp = megapixels(jobs[0].params)
        rows.append(
            {
                "references": count,
                "width": width,
                "height": height,
                "steps": steps,
                "image_tokens": image_tokens,
                "reference_tokens": reference_tokens,
                "tokens_per_step": image_tokens + reference_tokens,
                "requests": len(jobs),
                "denoise_p50_s": float(np.percentile(denoise_s, 50)),
                "denoise_p95_s": float(np.percentile(denoise_s, 95)),
                "total_p50_s": float(np.percentile(total_s, 50)),
                "total_p95_s": float(np.percentile(total_s, 95)),
                "quoted_vs_none": (output_mp + input_mp)
                / output_mp,  # the submit's price model (serve_apps/jobs/pricing.py)
                "peak_gpu_memory_mb": None if memory.peak_gpu_bytes is None else memory.peak_gpu_bytes / 2**20,
            }
        )
    none = next((row for row in rows if row["references"] == 0), None)
    for row in rows:
        row["vs_none"] = row["total_p50_s"] / none["total_p50_s"] if none else None
        row["added_s"] = row["total_p50_s"] - none["total_p50_s"] if none else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="emulated:tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=256, help="output and reference side, pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    encoder, denoiser, references = reference_workers(MODEL, args.weights, args.device)
    rows = reference_latency(
        encoder, denoiser, references, [0, 1, 2], args.size, args.size, args.steps, [PROMPT] * args.repeats
    )
    print(f"{MODEL} {args.weights} {args.size}x{args.size}, {args.steps} steps, median of {args.repeats}")
    print("| references | image tokens per step | latency s | vs none |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['references']} | {row['tokens_per_step']} | {row['total_p50_s']:.3f} | x{row['vs_none']:.2f} |")


if __name__ == "__main__":
    main()
