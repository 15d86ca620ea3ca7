"""What batching and the encoder split buy, measured on the model workers in-process.

    python -m bench.worker_batching --weights emulated:small --size 512

(a) 8 single-image requests run as one latent batch versus one after another;
(b) encode a prompt once and make 12 images versus encoding it 12 times.
Both sides of each ratio run in the same process, one after the other, after a warm-up.
"""

from __future__ import annotations

import argparse

from bench.harness import bench_arguments, time_repeats
from bench.runners import load_workers
from deployments.contracts import DenoiseJob, GenerationParams

PROMPT = "a red circle on a blue background"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[bench_arguments(repeats=2)]
    )
    args = parser.parse_args()

    encoder, denoiser = load_workers(args.model, args.weights, args.device)
    [embedding] = encoder.encode([PROMPT])

    def request(seed: int, num_images: int = 1) -> DenoiseJob:
        params = GenerationParams.with_defaults(
            denoiser.defaults, PROMPT, width=args.size, height=args.size, seed=seed, num_images=num_images
        )
        return DenoiseJob(params, embedding)

    def encode_uncached(times: int) -> None:
        for _ in range(times):
            encoder.cache.clear()
            encoder.encode([PROMPT])

    def twelve_images() -> None:
        denoiser.generate([request(0, num_images=12)])

    def best_s(action) -> float:
        return time_repeats(action, args.repeats, warmups=0).best_s

    denoiser.generate([request(0)])  # one warm-up before all measurements: first-call costs are not a warm replica's
    batched_s = best_s(lambda: denoiser.generate([request(seed) for seed in range(8)]))
    sequential_s = best_s(lambda: [denoiser.generate([request(seed)]) for seed in range(8)])
    encode_once_s = best_s(lambda: (encode_uncached(1), twelve_images()))
    encode_twelve_s = best_s(lambda: (encode_uncached(12), twelve_images()))
    encode_one_s = best_s(lambda: encode_uncached(1))

    steps = denoiser.defaults.steps
    print(f"model {args.model}, weights {args.weights}, {args.size}x{args.size}, {steps} steps, best of {args.repeats}")
    print("| measurement | seconds | speed-up |")
    print("|---|---|---|")
    print(f"| 8 single-image requests, one after another | {sequential_s:.2f} | 1.00 |")
    print(f"| 8 single-image requests, one latent batch | {batched_s:.2f} | {sequential_s / batched_s:.2f}x |")
    print(f"| encode 12 times + 12 images | {encode_twelve_s:.2f} | 1.00 |")
    print(f"| encode once + 12 images | {encode_once_s:.2f} | {encode_twelve_s / encode_once_s:.2f}x |")
    print(f"| one prompt encoding (uncached) | {encode_one_s:.3f} | |")


if __name__ == "__main__":
    main()
