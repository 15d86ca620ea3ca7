"""`flux-lora inspect PATH` and `flux-lora train ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deployments.registry import VARIANTS


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
    train_parser.add_argument("--rank", type=int, default=8)
    train_parser.add_argument("--steps", type=int, default=100)
    train_parser.add_argument("--learning-rate", type=float, default=1e-3)
    train_parser.add_argument("--resolution", type=int, default=64)
    train_parser.add_argument("--batch-size", type=int, default=4)
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cuda, cpu")
    train_parser.add_argument("--dtype", default="auto", help="of the base model: auto (bf16 on a GPU, fp32 on a CPU)")
    train_parser.add_argument("--tags", nargs="*", default=[], help="e.g. style person nsfw")
    options = parser.parse_args(argv)

    from lora.adapter_file import AdapterMismatch, inspect_adapter

    if options.command == "inspect":
        try:
            print(json.dumps(inspect_adapter(options.path).describe(), indent=2))
        except AdapterMismatch as error:
            sys.exit(str(error))
        return
    from training.lora_trainer import LoraTrainingConfig, train_lora

    settings = {k: v for k, v in vars(options).items() if k != "command"}
    result = train_lora(LoraTrainingConfig(**settings))
    print(
        f"adapter: {result.adapter_path}\nmodel card: {result.card_path}\n"
        f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f} in {result.seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
