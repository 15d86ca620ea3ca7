"""A finetune of a new concept on the offline model, through FinetuneWorker with default settings, measured.

    python -m bench.finetune                      # defaults: what a request naming only images, mode and trigger gets
    python -m bench.finetune --grid docs/finetune-grid.png

Trains the offline proof (training/finetune_proof.py: 12 pluses, a shape the offline model never drew, captioned
"a red TOK on a green background") and prints the time per step, the training's total, the time to the first
sample, the peak resident memory, and, on colour pairs never trained with the plus (4 and 16 seeds; image i from
seed i), the share of images that draw the plus and keep the asked colour and background: the base model, the
finetune at its default strength (and at 1.0), and answers that need no model (blank background, the nearest
training image, a drawn plus). The trained pairs are scored too, to show memorising apart from learning.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from PIL import Image

from training.finetune_proof import ServedModel, baseline_scores, proof_examples, proof_params
from training.finetune_worker import FinetuneWorker
from training.shapes_concepts import training_pairs, unseen_pairs

FIGURES = ("shape", "colour", "background", "colours", "all")
TILE_PX = 64


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def train(iterations: int | None) -> tuple[list, dict]:
    params = proof_params(**({"iterations": iterations} if iterations else {}))
    started, first_sample_s, events = time.perf_counter(), None, []
    for event in FinetuneWorker("cpu").train(params, proof_examples()):
        events.append(event)
        if event.sample_png is not None and first_sample_s is None:
            first_sample_s = time.perf_counter() - started
        if event.step % 100 == 0 or event.final:
            print(
                f"step {event.step}/{event.of} loss {event.loss:.4f} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    timings = dict(events[-1].details["timings_s"])
    timings.update(wall=round(time.perf_counter() - started, 1), first_sample_seen=round(first_sample_s or 0, 1))
    return events, {"params": params, "timings_s": timings, "peak_rss_mb": round(peak_rss_mb())}


def row(name: str, scores: dict[str, float]) -> str:
    return f"| {name} | " + " | ".join(f"{scores[figure]:.3f}" for figure in FIGURES) + " |"


def grid(model: ServedModel, pairs, path: Path) -> None:
    """Seeds 0-3 of each unseen pair, one row per pair."""
    rows = model.images(pairs, 4)
    canvas = Image.new("RGB", (4 * TILE_PX, len(rows) * TILE_PX))
    for top, images in enumerate(rows):
        for left, image in enumerate(images):
            canvas.paste(image, (left * TILE_PX, top * TILE_PX))
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=None, help="instead of the offline model's default")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads: on a shared CPU one is fastest")
    parser.add_argument("--grid", type=Path, default=None, help="save the finetune's unseen pairs, seeds 0-3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    events, run = train(args.iterations)
    final, params = events[-1], run["params"]
    timings = run["timings_s"]
    print(
        f"\ndefaults: {params.iterations} iterations, learning rate {params.learning_rate}, rank {params.rank}; "
        f"{final.details['batch_size']} images + {final.details['batch_size']} prior images a step"
    )
    print(
        f"time per step {timings['seconds_per_step']:.3f} s, training {timings['train']:.0f} s, "
        f"to first sample {timings['first_sample']:.1f} s, whole finetune {timings['wall']:.0f} s "
        f"(load {timings['load']} s, caching {timings['cache']} s, strength sweep {timings['strength_sweep']} s), "
        f"peak RSS {run['peak_rss_mb']} MB"
    )
    print(f"strength sweep ({final.details['strength_criterion']}): {final.details['strength_sweep']}")
    print(f"default strength {final.default_strength}")
    unseen, trained = unseen_pairs(), training_pairs()
    base, finetuned = ServedModel(), ServedModel(final.adapter, final.default_strength)
    at_one = ServedModel(final.adapter, 1.0)
    results = {}
    for seeds in (4, 16):
        print(f"\nunseen colour pairs ({len(unseen)}), {seeds} seeds: {len(unseen) * seeds} images")
        print("| model | " + " | ".join(FIGURES) + " |\n|---|" + "---|" * len(FIGURES))
        models = [("base model", base), (f"finetune at {final.default_strength}", finetuned)]
        if final.default_strength != 1.0:
            models.append(("finetune at 1.0", at_one))
        for name, model in models:
            results[f"{name}, {seeds} seeds"] = scores = model.scores(unseen, seeds)
            print(row(name, scores), flush=True)
        if seeds == 4:
            for name, scores in baseline_scores(unseen).items():
                print(row(f"{name} (no model)", scores))
    print(f"\ntrained colour pairs ({len(trained)}), 4 seeds")
    for name, model in (("base model", base), (f"finetune at {final.default_strength}", finetuned)):
        print(row(name, model.scores(trained, 4)))
    if args.grid:
        grid(finetuned, unseen, args.grid)
    print(json.dumps({"timings_s": timings, "peak_rss_mb": run["peak_rss_mb"], "scores": results}, indent=1))


if __name__ == "__main__":
    main()
