"""What batching and the encoder split buy, measured on the model workers in-process.

    python -m bench.worker_batching --weights emulated:small --size 512

(a) 8 single-image requests run as one latent batch versus one after another;
(b) encode a prompt once and make 12 images versus encoding it 12 times.
Both sides of each ratio run in the same process, one after the other, after a warm-up.
"""

from __future__ import annotations

import argparse
import time

from cachetools import LRUCache

from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.contracts import DenoiseJob, GenerationParams

PROMPT = "a red circle on a blue background"


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def best_of(repeats: int, action) -> float:
    return min(timed(action) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="flux-2-klein-4b")
    parser.add_argument("--weights", default="emulated:small")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each side")
    args = parser.parse_args()

    encoder = TextEncoder(args.model, weights=args.weights)
    denoiser = Denoiser(args.model, weights=args.weights)
    [embedding] = encoder.encode([PROMPT])

    def request(seed: int, num_images: int = 1) -> DenoiseJob:
        params = GenerationParams.with_defaults(
            denoiser.defaults, PROMPT, width=args.size, height=args.size, seed=seed, num_images=num_images
        )
        return DenoiseJob(params, embedding)

    denoiser.generate([request(0)])
    batched_s = best_of(args.repeats, lambda: denoiser.generate([request(seed) for seed in range(8)]))
    sequential_s = best_of(args.repeats, lambda: [denoiser.generate([request(seed)]) for seed in range(8)])

    def encode_uncached(times: int) -> None:
        for _ in range(times):
            encoder.cache = LRUCache(maxsize=encoder.cache.maxsize)
            encoder.encode([PROMPT])

    twelve_images = lambda: denoiser.generate([request(0, num_images=12)])  # noqa: E731
    encode_once_s = best_of(args.repeats, lambda: (encode_uncached(1), twelve_images()))
    encode_twelve_s = best_of(args.repeats, lambda: (encode_uncached(12), twelve_images()))
    encode_one_s = best_of(args.repeats, lambda: encode_uncached(1))

    print(f"model {args.model}, weights {args.weights}, {args.size}x{args.size}, 4 steps, best of {args.repeats}")
    print("| measurement | seconds | speed-up |")
    print("|---|---|---|")
    print(f"| 8 single-image requests, one after another | {sequential_s:.2f} | 1.00 |")
    print(f"| 8 single-image requests, one latent batch | {batched_s:.2f} | {sequential_s / batched_s:.2f}x |")
    print(f"| encode 12 times + 12 images | {encode_twelve_s:.2f} | 1.00 |")
    print(f"| encode once + 12 images | {encode_once_s:.2f} | {encode_twelve_s / encode_once_s:.2f}x |")
    print(f"| one prompt encoding (uncached) | {encode_one_s:.3f} | |")


if __name__ == "__main__":
    main()
