"""What the single-question bench scripts share: their common flags and one timer.

Each script (worker_batching, serve_overhead, lora_switching, shapes_quality) answers one
question with one table; the workers come from `bench.runners`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployments.contracts import GenerationParams, InvalidRequestError
from deployments.registry import UnknownModelError, get_variant


def _model(name: str) -> str:
    try:
        return get_variant(name).name
    except UnknownModelError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _size(text: str) -> int:
    """An image side the service accepts, refused before any model loads."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels, e.g. 512")
    try:
        GenerationParams(prompt="", width=int(text), height=int(text), steps=4, guidance=None, seed=0).check()
    except InvalidRequestError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return int(text)


def _repeats(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return int(text)


def bench_arguments(*, weights: str = "emulated:small", size: int = 512, repeats: int = 3) -> argparse.ArgumentParser:
    """The flags every script takes, named as flux-bench names them: a parent parser for `parents=[...]`.

    The defaults are each script's own, so its README command line stays what it was.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", type=_model, default="flux-2-klein-4b", help="model variant")
    parser.add_argument("--weights", default=weights, help="emulated, emulated:tiny|small, a folder or a hub id")
    parser.add_argument("--size", type=_size, default=size, help="image side in pixels")
    parser.add_argument("--repeats", type=_repeats, default=repeats, help="timed runs of each measurement")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    return parser


@dataclass(frozen=True)
class Timings:
    """Wall seconds of each timed run, and what the last run returned."""

    seconds: tuple[float, ...]
    result: Any = None

    @property
    def best_s(self) -> float:
        """The least disturbed run: on a shared machine, noise only ever adds time."""
        return min(self.seconds)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def time_repeats(
    action: Callable[[], Any], repeats: int, warmups: int = 1, before: Callable[[], Any] = lambda: None
) -> Timings:
    """Time `repeats` calls of `action` after `warmups` untimed ones.

    Warm-ups pay first-call costs (allocations, lazy set-up) that a warm replica does not;
    `before` runs untimed ahead of each timed call, to put the workers in the state measured.
    """
    for _ in range(warmups):
        action()
    seconds, result = [], None
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return Timings(tuple(seconds), result)
