"""What a repeated reference costs: 20 jobs with the same 1 and 4 references, the reference cache on and off.

The same references go with every job (one character, job after job). With the cache on, the 1st job
prepares them (load, preprocess, VAE-encode) and the 2nd..20th find them prepared
(deployments/reference_cache.py; a 9B-KV variant also keeps the references' keys and values,
deployments/kv_reuse.py). Both denoisers run in this one process, a job on one then the same job
on the other, so a machine's load drifting over the run weighs on both sides alike.

    python -m bench.reference_cache                       # tiny emulated model, CPU, 512x512, 4 steps
    python -m bench.reference_cache --model flux-2-klein-9b-kv  # the variant whose reference work a cache can skip
    python -m bench.reference_cache --weights emulated:real --size 1024 --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.reference_latency import MODEL, PROMPT, MemoryReferences
from bench.runners import SEED, load_workers
from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder


def timed_job(denoiser: Denoiser, job) -> tuple[float, float, str]:
    """(end-to-end seconds, reference preparation seconds, hit or miss) of one job run alone."""
    started = time.perf_counter()
    [result] = denoiser.generate([job])
    return time.perf_counter() - started, result.timings_s["reference_prepare"], result.reference_cache


def repeated_references(
    encoder: TextEncoder, cached: Denoiser, uncached: Denoiser, count: int, size: int, steps: int, jobs: int
) -> dict:
    """One row: `jobs` jobs (seeds differ) with the same `count` references, each run on both denoisers."""
    references = MemoryReferences()
    refs = references.make(count, size, size)
    for denoiser in (cached, uncached):
        denoiser.conditioning.load = references.load
        denoiser.conditioning.images.clear()  # the 1st job loads its references from "storage", as a replica does
        denoiser.conditioning.prepared.tensors.clear()
        if denoiser.reference_kv is not None:
            denoiser.reference_kv.held.clear()
    runs: dict[str, list[tuple[float, float, str]]] = {"on": [], "off": []}
    for number in range(jobs):
        params = GenerationParams.with_defaults(
            cached.defaults, PROMPT, width=size, height=size, steps=steps, seed=SEED + number, references=refs
        )
        job = encoder.job(params)
        sides = [("on", cached), ("off", uncached)]
        for side, denoiser in sides if number % 2 == 0 else sides[::-1]:
            runs[side].append(timed_job(denoiser, job))
    on, off = runs["on"], runs["off"]
    repeat_prepare_s = float(np.median([prepare for _, prepare, _ in on[1:]]))
    return {
        "references": count,
        "jobs": jobs,
        "hits": [status for _, _, status in on].count("hit"),
        "prepare_first_s": on[0][1],
        "prepare_repeat_median_s": repeat_prepare_s,
        "prepare_repeat_vs_first": repeat_prepare_s / on[0][1],
        "prepare_off_median_s": float(np.median([prepare for _, prepare, _ in off])),
        "total_on_s": sum(total for total, _, _ in on),
        "total_off_s": sum(total for total, _, _ in off),
        "on_vs_off": sum(total for total, _, _ in on) / sum(total for total, _, _ in off),
        # each repeat against the same job run beside it without the cache: a load spike weighs on one pair only
        "repeat_on_vs_off_median": float(np.median([a[0] / b[0] for a, b in zip(on[1:], off[1:])])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="variant name (flux-2-klein-9b-kv keeps keys and values too)")
    parser.add_argument("--weights", default="emulated:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512, help="output and reference side, pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--references", default="1,4", help="reference counts, one row each")
    args = parser.parse_args()
    encoder, cached = load_workers(args.model, args.weights, args.device)
    uncached = Denoiser(args.model, weights=args.weights, device=args.device, reference_cache_bytes=0)
    warm = MemoryReferences()
    params = GenerationParams.with_defaults(
        cached.defaults, PROMPT, width=args.size, height=args.size, references=warm.make(1, args.size, args.size)
    )
    for denoiser in (cached, uncached):  # first-call costs (the VAE encoder's too), paid before anything is timed
        denoiser.conditioning.load = warm.load
        denoiser.generate([encoder.job(params)])
    rows = [
        repeated_references(encoder, cached, uncached, int(count), args.size, args.steps, args.jobs)
        for count in args.references.split(",")
    ]
    print(
        f"{args.model} {args.weights} {args.device} {args.size}x{args.size}, {args.steps} steps, {args.jobs} jobs a row"
    )
    print(
        "| references | prepare 1st s | prepare 2nd..last s (median) | vs 1st | prepare, cache off s (median) "
        "| hits | end-to-end on/off s | on vs off | 2nd..last on vs off, median of pairs |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['references']} | {row['prepare_first_s']:.3f} | {row['prepare_repeat_median_s']:.4f} "
            f"| x{row['prepare_repeat_vs_first']:.3f} | {row['prepare_off_median_s']:.3f} "
            f"| {row['hits']}/{row['jobs']} | {row['total_on_s']:.1f} / {row['total_off_s']:.1f} "
            f"| x{row['on_vs_off']:.2f} | x{row['repeat_on_vs_off_median']:.2f} |"
        )


if __name__ == "__main__":
    main()
