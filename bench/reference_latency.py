"""What reference images cost: denoise latency of one image with 0, 1 and 2 references, in-process.

Each reference adds (its pixels / 256) tokens to every step of the image's pass (diffusers'
klein pipeline takes references at up to 1 MP: 4096 tokens), and is VAE-encoded once per pass.

    python -m bench.reference_latency                       # tiny emulated model, CPU, 256x256
    python -m bench.reference_latency --weights emulated:real --size 1024 --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import time

from PIL import Image

from deployments.contracts import DenoiseJob, GenerationParams, ReferenceImage
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder

MODEL = "flux-2-klein-4b"


def references(count: int, size_px: int) -> tuple[tuple[ReferenceImage, ...], dict[str, bytes]]:
    refs, files = [], {}
    for number in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (size_px, size_px), (60 * number, 120, 200)).save(buffer, format="PNG")
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        refs.append(ReferenceImage(digest, f"{digest}.png", size_px, size_px))
        files[refs[-1].name] = buffer.getvalue()
    return tuple(refs), files


def measure(args: argparse.Namespace) -> list[dict]:
    encoder = TextEncoder(MODEL, weights=args.weights, device=args.device)
    files: dict[str, bytes] = {}
    denoiser = Denoiser(
        MODEL,
        weights=args.weights,
        device=args.device,
        reference_images=lambda ref: Image.open(io.BytesIO(files[ref.name])),
    )
    [prompt] = encoder.encode(["make the background yellow"])
    rows = []
    for count in (0, 1, 2):
        refs, new_files = references(count, args.size)
        files.update(new_files)
        params = GenerationParams.with_defaults(
            denoiser.defaults, "edit", width=args.size, height=args.size, steps=args.steps, seed=1, references=refs
        )
        denoiser.generate([DenoiseJob(params, prompt)])  # warm-up: loads and caches the references
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            denoiser.generate([DenoiseJob(params, prompt)])
            seconds.append(time.perf_counter() - started)
        tokens = (args.size // 16) ** 2
        rows.append({"references": count, "tokens": tokens * (1 + count), "median_s": statistics.median(seconds)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="emulated:tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=256, help="output and reference side, pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = measure(args)
    base_s = rows[0]["median_s"]
    print(f"{MODEL} {args.weights} {args.size}x{args.size}, {args.steps} steps, median of {args.repeats}")
    print("| references | image tokens per step | latency s | vs none |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['references']} | {row['tokens']} | {row['median_s']:.3f} | x{row['median_s'] / base_s:.2f} |")


if __name__ == "__main__":
    main()
