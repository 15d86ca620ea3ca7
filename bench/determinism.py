"""What deterministic mode buys and costs (issue 28): the same denoiser with `deterministic` off and on.

Buys: a job's bytes do not depend on who shared its call (the job alone, then in one call with `--others` jobs
of its size, which share its pass unless the mode is on), nor on the run (the job alone, twice). Costs: the
cross-request batching it gives up and its kernels, timed as `--burst` 1-image jobs sent as one call (as Serve
hands a burst to a replica) and as one job alone, the two modes alternated and the median of the paired ratios
reported, so a machine's load drifting over the run weighs on both alike.

On a GPU the process runs with CUBLAS_WORKSPACE_CONFIG set for both modes (cuBLAS reads it once per process),
so "off" there is the service's default but for that workspace.

    python -m bench.determinism                                              # tiny emulated 4B, CPU, 256 px
    python -m bench.determinism --weights emulated:real --device cuda --size 1024   # a GPU: what the mode costs
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch
from PIL import Image

from bench.runners import load_workers
from deployments.contracts import DenoiseJob, GenerationParams
from deployments.denoiser import Denoiser
from deployments.determinism import prepare_process
from deployments.encoder import TextEncoder

MODEL = "flux-2-klein-4b"


def largest_difference(first: bytes, second: bytes) -> int:
    a, b = (np.asarray(Image.open(io.BytesIO(data)), dtype=np.int16) for data in (first, second))
    return int(np.abs(a - b).max())


def burst(encoder: TextEncoder, defaults, count: int, size: int, steps: int, first_seed: int) -> list[DenoiseJob]:
    return [
        encoder.job(
            GenerationParams.with_defaults(
                defaults,
                f"a character in scene {number}",
                width=size,
                height=size,
                steps=steps,
                seed=first_seed + number,
                output_format="png",
            )
        )
        for number in range(count)
    ]


def timed_s(denoiser: Denoiser, jobs: list[DenoiseJob]) -> float:
    started = time.perf_counter()
    denoiser.generate(jobs)
    return time.perf_counter() - started


def invariance(denoiser: Denoiser, own: DenoiseJob, others: list[DenoiseJob]) -> tuple[int, int]:
    """(largest difference of the job alone run twice, of the job alone against the job batched with others)."""
    [alone], [again] = denoiser.generate([own]), denoiser.generate([own])
    batched = denoiser.generate([own, *others])[0]
    return largest_difference(alone.images[0], again.images[0]), largest_difference(alone.images[0], batched.images[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--weights", default="emulated:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256, help="output side, pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--others", type=int, default=3, help="jobs batched with the one checked")
    parser.add_argument("--burst", type=int, default=8, help="1-image jobs in the timed call")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    prepare_process(torch.device(args.device))
    encoder, shared = load_workers(args.model, args.weights, args.device)
    alone = Denoiser(args.model, weights=args.weights, device=args.device, deterministic=True)
    jobs = burst(encoder, shared.defaults, 1 + max(args.others, args.burst), args.size, args.steps, first_seed=1)
    sides = {"off": shared, "on": alone}
    checks = {name: invariance(denoiser, jobs[0], jobs[1 : 1 + args.others]) for name, denoiser in sides.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"burst": [], "one": []} for name in sides}
    for repeat in range(args.repeats + 1):  # the first round warms up, untimed
        for name in sides if repeat % 2 == 0 else reversed(list(sides)):
            burst_s, one_s = timed_s(sides[name], jobs[1 : 1 + args.burst]), timed_s(sides[name], jobs[:1])
            if repeat:
                times[name]["burst"].append(burst_s)
                times[name]["one"].append(one_s)

    print(f"{args.model} {args.weights} {args.device} {args.size}x{args.size}, {args.steps} steps")
    print(
        f"| deterministic | alone twice: largest difference | alone vs batched with {args.others}: largest "
        f"difference | {args.burst} jobs as one call s (median) | 1 job s (median) |"
    )
    print("|---|---|---|---|---|")
    for name in sides:
        twice, batched = checks[name]
        burst_s, one_s = statistics.median(times[name]["burst"]), statistics.median(times[name]["one"])
        print(f"| {name} | {twice} | {batched} | {burst_s:.2f} | {one_s:.3f} |")
    for kind, label in (("burst", f"{args.burst} jobs as one call"), ("one", "1 job")):
        ratios = [on / off for on, off in zip(times["on"][kind], times["off"][kind])]
        print(f"on vs off, {label}: x{statistics.median(ratios):.2f} (median of {len(ratios)} paired runs)")


if __name__ == "__main__":
    main()
