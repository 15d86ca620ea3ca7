"""Deterministic mode (`models.<name>.deterministic`): what a rerun needs to make the same bytes on any device.

Two things change a job's pixels between two runs of the same params. The pass it shares: a job batched with
other requests runs its transformer on a larger batch, whose kernels may block and round their sums differently
(measured on the CPU: 1/255 on some pixels of the tiny emulated model at 256 px), so in deterministic mode the
denoiser gives every request passes of its own (deployments/denoiser.py). And, on a GPU, kernels that pick their
algorithm per run or reduce with atomics: deterministic mode asks PyTorch for deterministic algorithms (cuDNN's
too, no benchmarking) and cuBLAS for a fixed workspace. An op with no deterministic implementation warns once
instead of failing the job. What it costs is the batching it gives up and the slower kernels: bench/determinism.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for reproducible GEMMs; read when its handle is made


def prepare_process(device: torch.device) -> None:
    """Before the first CUDA kernel of this process: cuBLAS's fixed workspace (an operator's own setting is kept)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms for the calls inside, and the process's previous choice back after them (a
    replica runs one denoiser, but a bench compares two in one process)."""
    if not enabled:
        yield
        return
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
