"""`flux-lora inspect PATH` and `flux-lora train ...`.

A bad argument (a count below 1, a side that is not a multiple of 16, missing or unusable data, unknown
weights, a file that is no adapter) is refused as argparse refuses one: its name, the fix, exit code 2;
the numbers before torch is even imported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deployments.contracts import SIDE_MULTIPLE_PX
from deployments.registry import VARIANTS

DTYPES = ("auto", "float32", "bfloat16", "float16")


def positive_int(text: str) -> int:
    """A count the trainer cannot run with at zero (steps, rank, batch size): refused before torch loads."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; use 1 or more")
    return value


def resolution(text: str) -> int:
    """Each 16x16 pixel patch is one token (VAE 8x, then 2x2 packing), so other sides cannot be tokenised."""
    value = int(text)
    if value < SIDE_MULTIPLE_PX or value % SIDE_MULTIPLE_PX:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; use a multiple of {SIDE_MULTIPLE_PX}, such as 64")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flux-lora", description="LoRA adapters for FLUX.2 [klein]")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect_parser = commands.add_parser("inspect", help="what an adapter file is: base model, trigger, rank, modules")
    inspect_parser.add_argument("path", type=Path)
    train_parser = commands.add_parser(
        "train", help="train an adapter on a folder of images + .txt captions or a Parquet file"
    )
    train_parser.add_argument("--model", required=True, choices=sorted(VARIANTS))
    train_parser.add_argument("--data", type=Path, required=True)
    train_parser.add_argument("--out", type=Path, required=True)
    train_parser.add_argument("--trigger-word", required=True)
    train_parser.add_argument("--weights", default="emulated")
    train_parser.add_argument("--rank", type=positive_int, default=8)
    train_parser.add_argument("--steps", type=positive_int, default=100)
    train_parser.add_argument("--learning-rate", type=float, default=1e-3)
    train_parser.add_argument("--resolution", type=resolution, default=64, help="pixels per side, a multiple of 16")
    train_parser.add_argument("--batch-size", type=positive_int, default=4)
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cuda, cpu")
    train_parser.add_argument(
        "--dtype", default="auto", choices=DTYPES, help="of the base model: auto (bf16 on a GPU, fp32 on a CPU)"
    )
    train_parser.add_argument("--tags", nargs="*", default=[], help="e.g. style person nsfw")
    options = parser.parse_args(argv)
    if options.command == "train" and not options.data.exists():
        train_parser.error(
            f"--data {options.data} does not exist: give a folder of images with .txt captions or a .parquet file"
        )

    from lora.adapter_file import AdapterMismatch, inspect_adapter

    if options.command == "inspect":
        try:
            print(json.dumps(inspect_adapter(options.path).describe(), indent=2))
        except AdapterMismatch as error:
            inspect_parser.error(str(error))
        return
    from deployments.weights import WeightsError
    from training.dataset import DatasetError
    from training.lora_trainer import LoraTrainingConfig, train_lora

    settings = {k: v for k, v in vars(options).items() if k != "command"}
    try:
        result = train_lora(LoraTrainingConfig(**settings))
    except DatasetError as error:
        train_parser.error(f"--data: {error}")
    except WeightsError as error:
        train_parser.error(f"--weights: {error}")
    print(
        f"adapter: {result.adapter_path}\nmodel card: {result.card_path}\n"
        f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f} in {result.seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
