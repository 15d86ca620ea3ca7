"""The speed-ups side by side: on the CPU in one run, and the GPU suite's table.

    python -m bench.acceleration_bench cpu                 # before vs the new defaults, this machine's CPU
    python -m bench.acceleration_bench cpu --compile       # also a compiled denoiser (minutes to compile)
    python -m bench.acceleration_bench summarize docs/bench-h100   # bench/gpu_suite.sh's runs -> speedups.md

`cpu` loads both setups in one process and alternates their requests, so a busy machine slows both alike, and
reports the median of the paired ratios (each "new" request over the "before" request just before it):
"before" is the text encoder with all its layers and LM head, PNG at zlib level 6 encoded inline; "new" is
what a replica does now on a CPU (`Acceleration()` resolved there). It also times PNG encoding of two real
pictures at level 6 and at the new default level.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from bench.harness import time_repeats
from deployments.acceleration import Acceleration
from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.images import FAST_PNG_LEVEL, PIL_DEFAULT_PNG_LEVEL, encode_image

MODEL = "flux-2-klein-4b"
DOCS = Path(__file__).parent.parent / "docs"
PICTURES = ("studio.png", "shapes-grid.png")
STAGES = ("encode", "denoise", "decode", "total")


def _one(encoder: TextEncoder, denoiser: Denoiser, params: GenerationParams) -> dict[str, float]:
    encoder.cache.clear()
    started = time.perf_counter()
    job = encoder.job(params)
    encode_s = time.perf_counter() - started
    [result] = denoiser.generate([job])
    return {"encode": encode_s, **result.timings_s, "total": time.perf_counter() - started}


def cpu(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)  # a fixed thread count: a shared machine's spare cores vary
    setups = {
        "before": (
            TextEncoder(MODEL, weights=args.weights, device="cpu", truncate=False),
            Denoiser(
                MODEL,
                weights=args.weights,
                device="cpu",
                acceleration=Acceleration(encode_threads=0, png_compress_level=PIL_DEFAULT_PNG_LEVEL),
            ),
        ),
        "new defaults": (
            TextEncoder(MODEL, weights=args.weights, device="cpu"),
            Denoiser(MODEL, weights=args.weights, device="cpu"),
        ),
    }
    if args.compile:
        started = time.perf_counter()
        compiled = Denoiser(MODEL, weights=args.weights, device="cpu", acceleration=Acceleration(compile=True))
        print(f"compiled denoiser ready (warm-up {compiled.warmup_s:.1f} s, all {time.perf_counter() - started:.1f} s)")
        setups["new + compile"] = (setups["new defaults"][0], compiled)
    params = GenerationParams.with_defaults(
        setups["before"][1].defaults,
        "a red circle above a blue square",
        width=args.size,
        height=args.size,
        steps=args.steps,
        seed=7,
        output_format="png",
    )
    for encoder, denoiser in setups.values():
        _one(encoder, denoiser, params)  # warm-up
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, (encoder, denoiser) in setups.items():
            samples[name].append(_one(encoder, denoiser, params))
    medians = {name: {s: statistics.median(x[s] for x in runs) for s in STAGES} for name, runs in samples.items()}

    def paired(name: str, stage: str) -> float:
        return statistics.median(n[stage] / b[stage] for n, b in zip(samples[name], samples["before"]))

    lines = [
        f"CPU ({args.threads} thread), {MODEL} weights {args.weights}, {args.size}x{args.size}, {args.steps} steps, "
        f"batch 1, PNG out, medians of {args.repeats} alternating requests; ratios: median of paired new/before",
        "",
        "| setup | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " | "
        + " | ".join(f"{s} vs before" for s in STAGES)
        + " |",
        "|---|" + "---:|" * (2 * len(STAGES)),
    ]
    for name, median in medians.items():
        ratios = " | ".join(f"{paired(name, s):.2f}x" for s in STAGES)
        lines.append(f"| {name} | " + " | ".join(f"{median[s]:.3f}" for s in STAGES) + f" | {ratios} |")
    lines += ["", *png_times(args.repeats)]
    return "\n".join(lines) + "\n"


def png_times(repeats: int) -> list[str]:
    """PNG encoding of real pictures (a UI screenshot, a grid of drawn shapes) at 1024 px, level 6 vs the new."""
    lines = [
        f"| picture (1024 px) | level {PIL_DEFAULT_PNG_LEVEL} ms | level {FAST_PNG_LEVEL} ms | time ratio | size ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in PICTURES:
        image = Image.open(DOCS / name).convert("RGB").resize((1024, 1024))
        times, sizes = {}, {}
        for level in (PIL_DEFAULT_PNG_LEVEL, FAST_PNG_LEVEL):
            timed = time_repeats(lambda: encode_image(image, "png", png_compress_level=level), max(3, repeats), 0)
            times[level], sizes[level] = timed.median_s * 1000, len(timed.result)
        slow, fast = times[PIL_DEFAULT_PNG_LEVEL], times[FAST_PNG_LEVEL]
        size_ratio = sizes[FAST_PNG_LEVEL] / sizes[PIL_DEFAULT_PNG_LEVEL]
        lines.append(f"| {name} | {slow:.1f} | {fast:.1f} | {fast / slow:.2f}x | {size_ratio:.2f}x |")
    return lines


def summarize(out: Path) -> str:
    """bench/gpu_suite.sh's runs (OUT/<variant>/<setup>/results.parquet) as one table, speed-up vs eager."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(out.glob("*/*/results.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows.append({**row, "setup": path.parent.name})
    eager = {(r["variant"], r["width"], r["height"]): r["total_p50_s"] for r in rows if r["setup"] == "eager"}
    order = ["eager", "compile", "compile-fp8", "compile-fp8-fastio"]
    rows.sort(key=lambda r: (r["variant"], r["width"], order.index(r["setup"]) if r["setup"] in order else 9))
    lines = [
        "| variant | size | setup | ms/step | denoise s | decode+encode s | text encode s | total s | vs eager "
        "| peak GPU GB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = eager.get((r["variant"], r["width"], r["height"]))
        speedup = f"{base / r['total_p50_s']:.2f}x" if base else "-"
        gpu_gb = (r.get("peak_gpu_memory_mb") or 0) / 1024
        lines.append(
            f"| {r['variant']} | {r['width']}x{r['height']} | {r['setup']} | "
            f"{1000 * r['denoise_p50_s'] / r['steps']:.1f} | {r['denoise_p50_s']:.3f} | {r['decode_p50_s']:.3f} | "
            f"{r['encode_p50_s']:.3f} | {r['total_p50_s']:.3f} | {speedup} | {gpu_gb:.1f} |"
        )
    skipped = out / "skipped.txt"
    if skipped.exists():
        lines += ["", "Not measured:", *(f"- {line}" for line in skipped.read_text().splitlines())]
    table = "\n".join(lines) + "\n"
    (out / "speedups.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    on_cpu = commands.add_parser("cpu", help="before vs the new defaults on this CPU, in one run")
    on_cpu.add_argument("--weights", default="emulated:small")
    on_cpu.add_argument("--size", type=int, default=256)
    on_cpu.add_argument("--steps", type=int, default=4)
    on_cpu.add_argument("--repeats", type=int, default=5)
    on_cpu.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier figures)")
    on_cpu.add_argument("--compile", action="store_true", help="also a compiled denoiser")
    on_cpu.add_argument("--out", type=Path, help="also write the table here")
    table = commands.add_parser("summarize", help="bench/gpu_suite.sh's runs as one table")
    table.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    text = cpu(args) if args.command == "cpu" else summarize(args.out)
    if args.command == "cpu" and args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
