"""Cost of switching LoRA adapters: a request whose adapter is resident versus one that must load.

    python -m bench.lora_switching --weights emulated:small --size 512

Trains two small adapters (a few steps: load cost does not depend on what they learned),
then on one denoiser that keeps one adapter loaded, times in one run: the base model,
a resident adapter, and an adapter that must be loaded (evicting the other).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="flux-2-klein-4b")
    parser.add_argument("--weights", default="emulated:small")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    paths = {}
    for name, colour in (("a", "red"), ("b", "blue")):
        result = train_lora(LoraTrainingConfig(
            model=args.model, data=make_dataset(work / f"data-{name}", colour), out=work / name,
            trigger_word=f"style{name}", weights=args.weights, rank=args.rank, steps=2, batch_size=2,
        ), show_progress=False)
        paths[name] = str(result.adapter_path)

    encoder = TextEncoder(args.model, weights=args.weights)
    denoiser = Denoiser(args.model, weights=args.weights, max_loaded_adapters=1)

    def timed(adapter: str | None) -> float:
        adapters = (AdapterRef(adapter, paths[adapter]),) if adapter else ()
        started = time.perf_counter()
        params = GenerationParams.with_defaults(
            denoiser.defaults, "a red circle", width=args.size, height=args.size, seed=0, adapters=adapters
        )
        denoiser.generate([encoder.job(params)])
        return time.perf_counter() - started

    timed(None)
    base, resident, switching = [], [], []
    for _ in range(args.repeats):
        base.append(timed(None))
        timed("a")
        resident.append(timed("a"))
        switching.append(timed("b"))  # evicts a, loads b
        timed("a")
    best = {name: min(values) for name, values in (("base", base), ("resident", resident), ("switching", switching))}
    print(f"model {args.model}, weights {args.weights}, {args.size}x{args.size}, rank {args.rank}, best of {args.repeats}, "
          f"adapter loads: {denoiser.adapters.loads}")
    print("| request | seconds | vs resident |")
    print("|---|---|---|")
    print(f"| base model, adapters disabled | {best['base']:.3f} | {best['base'] / best['resident']:.2f}x |")
    print(f"| adapter resident | {best['resident']:.3f} | 1.00x |")
    print(f"| adapter must be loaded (one evicted) | {best['switching']:.3f} | {best['switching'] / best['resident']:.2f}x |")


if __name__ == "__main__":
    main()
