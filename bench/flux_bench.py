"""flux-bench: steps, latency, quality and cost for each variant, in one table.

    flux-bench                                   # in-process, the offline default model, CPU
    flux-bench --url http://127.0.0.1:8000 --key KEY --concurrency 1,4   # the running service
    flux-bench --real-size --resolutions 1024 --steps 1,2,4,8           # on a GPU, full size

Runs a grid of variants x steps x batch sizes x resolutions (x concurrency levels over
HTTP) with a fixed seed and the fixed prompt set in bench/prompts.txt, and writes
results.parquet, results.md and three PNG plots to --out. In-process it can add three axes,
each per variant and step count, as edits.parquet, languages.parquet and references.parquet
and tables in results.md: --edits (held-out edits of the offline shapes model: asked
attribute, the others kept, shape IoU), --languages (its text-to-image adherence per prompt
language) and --references (latency of one image with 0, 1, 2 ... references of the output's
size; with --real-size at 1024x1024, the real models' native size, unless --resolutions says
otherwise).

    flux-bench --edits --languages en,ru --references 0,1,2 --steps 16 --batch-sizes 1
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from bench.axes_report import axes_markdown
from bench.cost import load_config
from bench.plots import plot
from bench.quality import ClipScorer
from bench.reference_latency import reference_latency, reference_workers
from bench.report import AXES, build_rows, markdown, scores_note, write_parquet
from bench.runners import Cell, HttpRunner, InProcessRunner
from bench.shapes_edits import edit_rows, held_out, language_rows
from deployments.acceleration import ATTENTION_BACKENDS, QUANTIZATIONS, Acceleration
from deployments.contracts import OUTPUT_FORMATS, GenerationParams, InvalidRequestError
from deployments.emulation import SETTINGS_FILENAME
from deployments.loading import pick_device, resolve_weights
from deployments.registry import VARIANTS, UnknownModelError, get_variant
from deployments.weights import EMULATED_PREFIX, REAL_SIZE, draws_noise
from training.shapes_language import LANGUAGES
from training.shapes_scoring import load as load_shapes_pipeline

MAX_REFERENCES = 8  # BFL's input_image .. input_image_8
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


def _counts(text: str) -> list[int]:
    """Reference counts: whole numbers from 0 to MAX_REFERENCES."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0 or max(values) > MAX_REFERENCES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give reference counts from 0 to {MAX_REFERENCES}, comma-separated, e.g. 0,1,2"
        )
    return list(dict.fromkeys(values))


def _languages(text: str) -> list[str]:
    values = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not values or any(value not in LANGUAGES for value in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the shapes world's prompt languages are {', '.join(LANGUAGES)}; e.g. en,ru"
        )
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


SWITCHES = {"auto": "auto", "on": True, "off": False}


def acceleration(args: argparse.Namespace) -> Acceleration:
    """The speed-ups an in-process run uses, as serve_config.yaml's `acceleration:` would set them. No warm-up:
    every cell runs one request first anyway, which compiles its shapes."""
    return Acceleration(
        compile=SWITCHES[args.compile],
        quantization=args.quantization,
        attention_backend=args.attention_backend,
        fast_decode=SWITCHES[args.fast_decode],
        gpu_jpeg=SWITCHES[args.gpu_jpeg],
        warmup_sizes=(),
        png_compress_level=args.png_compress_level,
    )


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


def _trained_on_shapes(weights: str) -> bool:
    """Weights whose pictures the shapes-world scorer can read: the trained default, or a folder trained here."""
    if weights == EMULATED_PREFIX:
        return True
    settings = Path(weights).expanduser() / SETTINGS_FILENAME
    return settings.exists() and bool(json.loads(settings.read_text()).get("trained"))


def _check_axes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The edit, language and reference axes run in-process; adherence needs weights trained on the shapes world."""
    flags = [flag for flag, on in (("--edits", args.edits), ("--languages", args.languages)) if on]
    if args.url and (flags or args.references):
        parser.error(f"{', '.join(flags + ['--references'] * bool(args.references))}: in-process only; drop --url")
    if flags and (args.real_size or not _trained_on_shapes(args.weights)):
        parser.error(
            f"{' and '.join(flags)} score the shapes world's pictures, which weights {args.weights!r} do not draw "
            "(random weights draw noise): use --weights emulated (the trained default) or a folder trained by "
            "training/; --references measures latency with any weights"
        )


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
    parser.add_argument(
        "--edits",
        action="store_true",
        help="score held-out edits (asked attribute, the others kept, shape IoU) in each of --languages (default en)",
    )
    parser.add_argument(
        "--languages", type=_languages, default=None, help="text-to-image adherence per prompt language, e.g. en,ru"
    )
    parser.add_argument(
        "--references", type=_counts, default=None, help="latency with this many reference images, e.g. 0,1,2"
    )
    parser.add_argument(
        "--seeds", type=_positive_int, default=4, help="images per held-out edit or scene (--edits, --languages)"
    )
    parser.add_argument(
        "--held-out",
        type=_positive_int,
        default=None,
        help="score the first N held-out edits per attribute and the first N held-out scenes (default: all)",
    )
    parser.add_argument("--device", default="auto")
    speedups = parser.add_argument_group("speed-ups (in-process; auto: the service's defaults for the device)")
    speedups.add_argument("--compile", choices=SWITCHES, default="auto", help="regional torch.compile")
    speedups.add_argument("--quantization", choices=QUANTIZATIONS, default="none", help="fp8: torchao, CUDA 8.9+")
    speedups.add_argument("--attention-backend", choices=ATTENTION_BACKENDS, default="auto")
    speedups.add_argument("--fast-decode", choices=SWITCHES, default="auto", help="VAE decode in bf16, compiled")
    speedups.add_argument("--gpu-jpeg", choices=SWITCHES, default="auto", help="JPEG on the GPU (torchvision)")
    speedups.add_argument("--png-compress-level", type=int, choices=range(10), default=1, metavar="0..9")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default="png", help="what each image is encoded to")
    parser.add_argument("--config", type=Path, default=CONFIG_FILE, help="GPU prices and CLIP model path")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default bench/results/<time>)")
    args = parser.parse_args(argv)
    if args.url and not args.key:
        parser.error("--url needs --key (the service's API key)")
    if args.url and args.real_size:
        parser.error("--real-size runs in-process; for the service set weights: emulated:real in serve_config.yaml")
    if args.concurrency != [1] and not args.url:
        parser.error("--concurrency needs --url: in-process runs one request at a time")
    _check_axes(parser, args)
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
        Cell(variant, steps, batch, width, height, concurrency, args.output_format)
        for variant in args.variants
        for width, height in (args.resolutions or [native_sizes[variant]])
        for batch in args.batch_sizes
        for concurrency in args.concurrency
        for steps in args.steps
    ]


def _with_context(
    variant: str, weights: str, device: str, device_name: str, steps: int, rows: list[dict]
) -> list[dict]:
    context = {
        "variant": variant,
        "weights": weights,
        "mode": "in-process",
        "device": device,
        "device_name": device_name,
        "steps": steps,
    }
    return [{**context, **row} for row in rows]


def score_axes(
    args: argparse.Namespace, native_sizes: dict[str, tuple[int, int]], prompts: list[str], device_name: str
) -> dict[str, list[dict]]:
    """The edit, language and reference rows, per variant and step count (an empty list per axis not asked).

    Edits and languages run `Flux2KleinPipeline` itself on the CPU (bench/shapes_edits.py), once
    per checkpoint and step count: variants backed by the same checkpoint get the same scores.
    References run the service's workers, loaded here and let go before the grid loads its own.
    """
    axes: dict[str, list[dict]] = {name: [] for name in AXES}
    if args.edits or args.languages:
        edits, scenes = held_out(args.held_out, args.held_out)
        scored: dict[tuple[str, int], tuple[list[dict], list[dict]]] = {}
        for variant in args.variants:
            source = resolve_weights(get_variant(variant), args.weights).source
            pipeline, settings = load_shapes_pipeline(Path(source))
            for steps in args.steps:
                if (source, steps) not in scored:
                    at_steps = {**settings, "default_steps": steps}
                    scored[source, steps] = (
                        edit_rows(pipeline, at_steps, edits, args.seeds, args.languages or ["en"])
                        if args.edits
                        else [],
                        language_rows(pipeline, at_steps, scenes, args.seeds, args.languages or []),
                    )
                device = pipeline.device.type
                for axis, rows in zip(("edits", "languages"), scored[source, steps]):
                    axes[axis] += _with_context(variant, args.weights, device, device, steps, rows)
            del pipeline
    if args.references:
        device = pick_device(args.device).type
        for variant in args.variants:
            encoder, denoiser, references = reference_workers(variant, args.weights, args.device)
            for width, height in args.resolutions or [native_sizes[variant]]:
                for steps in args.steps:
                    rows = reference_latency(
                        encoder, denoiser, references, args.references, width, height, steps, prompts
                    )
                    axes["references"] += _with_context(variant, args.weights, device, device_name, steps, rows)
            del encoder, denoiser, references
            gc.collect()  # the real-size models hold GPU memory the grid's own load needs
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return axes


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
        runner = InProcessRunner(args.weights, args.device, args.gpu_fraction, acceleration(args))
        torch_device = pick_device(args.device)
        device, device_name = torch_device.type, device_label(torch_device)
    facts = {name: runner.model_facts(name) for name in args.variants}
    cells = grid(args, {name: (fact.defaults.width, fact.defaults.height) for name, fact in facts.items()})
    clip = ClipScorer(config.clip_model_path) if config.clip_model_path else None
    out_dir = args.out or BENCH_DIR / "results" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = score_axes(
        args, {name: (f.defaults.width, f.defaults.height) for name, f in facts.items()}, prompts, device_name
    )

    runs = []
    requests_per_cell = [max(len(prompts), cell.concurrency) for cell in cells]
    with tqdm(total=sum(requests_per_cell), desc="flux-bench", unit="request") as bar:
        for cell in cells:
            bar.set_postfix_str(f"{cell.variant} {cell.steps} steps batch {cell.batch_size} {cell.width}x{cell.height}")
            runs.append(runner.run(cell, prompts, on_request=lambda: bar.update(1)))

    rows = build_rows(
        runs,
        config,
        defaults={name: fact.defaults for name, fact in facts.items()},
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
    written = [out_dir / "results.parquet", out_dir / "results.md"]
    for axis, axis_rows in axes.items():
        if axis_rows:
            written.append(out_dir / f"{axis}.parquet")
            write_parquet(axis_rows, written[-1])
    table = markdown(rows, config, {name: fact.description for name, fact in facts.items()}, note, command)
    table += axes_markdown(axes)
    (out_dir / "results.md").write_text(table)
    plots = plot(rows, config, out_dir, {name: fact.defaults.steps for name, fact in facts.items()})
    print(table)
    print(f"Wrote {', '.join(str(path) for path in written)} and {', '.join(p.name for p in plots)}")
    return out_dir


if __name__ == "__main__":
    main()
