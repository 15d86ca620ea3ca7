"""Cost of switching LoRA adapters: a request whose adapter is resident versus one that must load.

    python -m bench.lora_switching --weights emulated:small --size 512

Trains two small adapters (a few steps: load cost does not depend on what they learned),
then on one denoiser that keeps one adapter loaded, times in one run: a resident adapter,
an adapter that must be loaded (evicting the other), and the base model with adapters disabled.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from bench.harness import bench_arguments, time_repeats
from bench.runners import load_workers
from deployments.contracts import AdapterRef, GenerationParams
from training.lora_trainer import LoraTrainingConfig, train_lora
from training.shapes_world import SHAPES, Scene, draw


def make_dataset(folder: Path, colour: str) -> Path:
    folder.mkdir(parents=True)
    rng = random.Random(0)
    for index in range(4):
        scene = Scene(rng.choice(SHAPES), colour, "white")
        draw(scene, rng).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(scene.caption)
    return folder


def train_adapters(args: argparse.Namespace) -> dict[str, str]:
    """Adapter name -> its file: "a" draws red shapes, "b" blue ones."""
    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    paths = {}
    for name, colour in (("a", "red"), ("b", "blue")):
        config = LoraTrainingConfig(
            model=args.model,
            data=make_dataset(work / f"data-{name}", colour),
            out=work / name,
            trigger_word=f"style{name}",
            weights=args.weights,
            rank=args.rank,
            steps=2,
            batch_size=2,
        )
        paths[name] = str(train_lora(config, show_progress=False).adapter_path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[bench_arguments()]
    )
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank of both adapters")
    args = parser.parse_args()

    paths = train_adapters(args)
    encoder, denoiser = load_workers(args.model, args.weights, args.device, max_loaded_adapters=1)

    def generate(adapter: str | None) -> None:
        adapters = (AdapterRef(adapter, paths[adapter]),) if adapter else ()
        params = GenerationParams.with_defaults(
            denoiser.defaults, "a red circle", width=args.size, height=args.size, seed=0, adapters=adapters
        )
        denoiser.generate([encoder.job(params)])

    def use_a() -> None:
        generate("a")

    resident = time_repeats(use_a, args.repeats)  # the warm-up loads a
    switching = time_repeats(lambda: generate("b"), args.repeats, warmups=0, before=use_a)  # untimed a evicts b
    base = time_repeats(lambda: generate(None), args.repeats, warmups=0)  # b stays loaded, disabled
    best = {"base": base.best_s, "resident": resident.best_s, "switching": switching.best_s}

    print(
        f"model {args.model}, weights {args.weights}, {args.size}x{args.size}, rank {args.rank}, best of {args.repeats}, "
        f"adapter loads: {denoiser.adapters.loads}"
    )
    print("| request | seconds | vs resident |")
    print("|---|---|---|")
    print(f"| base model, adapters disabled | {best['base']:.3f} | {best['base'] / best['resident']:.2f}x |")
    print(f"| adapter resident | {best['resident']:.3f} | 1.00x |")
    switching_ratio = best["switching"] / best["resident"]
    print(f"| adapter must be loaded (one evicted) | {best['switching']:.3f} | {switching_ratio:.2f}x |")


if __name__ == "__main__":
    main()
