"""flux-bench: steps, latency, quality and cost for each variant, in one table.

    flux-bench                                   # in-process, the offline default model, CPU
    flux-bench --url http://127.0.0.1:8000 --key KEY --concurrency 1,4   # the running service
    flux-bench --real-size --resolutions 1024 --steps 1,2,4,8           # on a GPU, full size

Runs a grid of variants x steps x batch sizes x resolutions (x concurrency levels over
HTTP) with a fixed seed and the fixed prompt set in bench/prompts.txt, and writes
results.parquet, results.md and three PNG plots to --out.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from bench.cost import load_config
from bench.quality import ClipScorer
from bench.report import build_rows, markdown, plot, scores_note, write_parquet
from bench.runners import Cell, HttpRunner, InProcessRunner
from deployments.contracts import GenerationParams, InvalidRequestError
from deployments.registry import VARIANTS, UnknownModelError, get_variant
from deployments.weights import REAL_SIZE, draws_noise, pick_device

BENCH_DIR = Path(__file__).parent
PROMPTS_FILE = BENCH_DIR / "prompts.txt"
CONFIG_FILE = BENCH_DIR / "bench_config.yaml"


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of whole numbers, e.g. 1,2,4"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more numbers of at least 1")
    return values


def _resolutions(text: str) -> list[tuple[int, int]]:
    """'64,512x288' -> [(64, 64), (512, 288)] as (width, height)."""
    sizes = []
    for part in text.split(","):
        width, _, height = part.strip().partition("x")
        if not width.isdigit() or (height and not height.isdigit()):
            raise argparse.ArgumentTypeError(f"{part!r} is not a resolution; write 64 or 512x288 (width x height)")
        sizes.append((int(width), int(height or width)))
    return sizes


def _positive_int(text: str) -> int:
    values = _ints(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one number, e.g. 4")
    return values[0]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give the share of one GPU, more than 0 and at most 1, e.g. 0.5")
    return value


def _variants(text: str) -> list[str]:
    try:
        return [get_variant(name.strip()).name for name in text.split(",")]
    except UnknownModelError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _check_limits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The service's own request limits, checked before any model loads."""
    flags = {"width": "--resolutions", "height": "--resolutions", "steps": "--steps", "num_images": "--batch-sizes"}
    within = GenerationParams(prompt="", width=1024, height=1024, steps=4, guidance=None, seed=0)
    requests = [
        *(replace(within, width=width, height=height) for width, height in args.resolutions or []),
        *(replace(within, steps=steps) for steps in args.steps),
        *(replace(within, num_images=batch) for batch in args.batch_sizes),
    ]
    for request in requests:
        try:
            request.check()
        except InvalidRequestError as error:
            parser.error(f"{flags[error.field]}: {error.message}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="flux-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", type=_variants, default=list(VARIANTS), help="comma-separated model variants")
    parser.add_argument(
        "--weights", default="emulated", help="in-process weights: emulated, emulated:tiny|small, a folder or a hub id"
    )
    parser.add_argument("--steps", type=_ints, default=[1, 2, 4, 8, 16])
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 4], help="images per request")
    parser.add_argument(
        "--resolutions",
        type=_resolutions,
        default=None,
        help="e.g. 64 or 512x288,1024 (default: the model's native size)",
    )
    parser.add_argument("--concurrency", type=_ints, default=[1], help="concurrent requests (HTTP only)")
    parser.add_argument(
        "--prompts", type=_positive_int, default=None, help="use the first N prompts of bench/prompts.txt"
    )
    parser.add_argument("--url", help="benchmark the running service at this URL instead of in-process")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument(
        "--real-size", action="store_true", help=f"weights {REAL_SIZE}: full-size random weights on the GPU"
    )
    parser.add_argument(
        "--gpu-fraction", type=_fraction, default=1.0, help="share of a GPU an in-process run stands for (cost)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", type=Path, default=CONFIG_FILE, help="GPU prices and CLIP model path")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default bench/results/<time>)")
    args = parser.parse_args(argv)
    if args.url and not args.key:
        parser.error("--url needs --key (the service's API key)")
    if args.url and args.real_size:
        parser.error("--real-size runs in-process; for the service set weights: emulated:real in serve_config.yaml")
    if args.concurrency != [1] and not args.url:
        parser.error("--concurrency needs --url: in-process runs one request at a time")
    _check_limits(parser, args)
    if args.real_size:
        args.weights = REAL_SIZE
        if pick_device(args.device).type != "cuda":
            parser.error(
                "--real-size builds the full-size models in GPU memory and needs a CUDA GPU; on a CPU use --weights emulated:small"
            )
    return args


def grid(args: argparse.Namespace, native_sizes: dict[str, tuple[int, int]]) -> list[Cell]:
    return [
        Cell(variant, steps, batch, width, height, concurrency)
        for variant in args.variants
        for width, height in (args.resolutions or [native_sizes[variant]])
        for batch in args.batch_sizes
        for concurrency in args.concurrency
        for steps in args.steps
    ]


def device_label(device: torch.device) -> str:
    """The GPU's own name ('NVIDIA H100 80GB HBM3'), so the cost table knows what it measured on."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    config = load_config(args.config)
    prompts = [line.strip() for line in PROMPTS_FILE.read_text().splitlines() if line.strip()][: args.prompts]
    if args.url:
        runner, device, device_name = HttpRunner(args.url, args.key), "service", "service"
    else:
        runner, torch_device = InProcessRunner(args.weights, args.device, args.gpu_fraction), pick_device(args.device)
        device, device_name = torch_device.type, device_label(torch_device)
    facts = {name: runner.model_facts(name) for name in args.variants}
    cells = grid(args, {name: (fact.defaults.width, fact.defaults.height) for name, fact in facts.items()})
    clip = ClipScorer(config.clip_model_path) if config.clip_model_path else None
    out_dir = args.out or BENCH_DIR / "results" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = []
    requests_per_cell = [max(len(prompts), cell.concurrency) for cell in cells]
    with tqdm(total=sum(requests_per_cell), desc="flux-bench", unit="request") as bar:
        for cell in cells:
            bar.set_postfix_str(f"{cell.variant} {cell.steps} steps batch {cell.batch_size} {cell.width}x{cell.height}")
            runs.append(runner.run(cell, prompts, on_request=lambda: bar.update(1)))

    rows = build_rows(
        runs,
        config,
        mode=runner.mode,
        weights=args.weights if not args.url else "as served",
        device=device,
        device_name=device_name,
        gpu_fraction=None if args.url else args.gpu_fraction,
        clip=clip,
        score_quality=bool(args.url) or not draws_noise(args.weights),
    )
    note = scores_note(rows, config.clip_model_path)
    command = "flux-bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    write_parquet(rows, out_dir / "results.parquet")
    table = markdown(rows, config, {name: fact.description for name, fact in facts.items()}, note, command)
    (out_dir / "results.md").write_text(table)
    plots = plot(rows, config, out_dir, {name: fact.defaults.steps for name, fact in facts.items()})
    print(table)
    print(f"Wrote {out_dir / 'results.parquet'}, {out_dir / 'results.md'} and {', '.join(p.name for p in plots)}")
    return out_dir


if __name__ == "__main__":
    main()
