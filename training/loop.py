"""The step loop every trainer shares: the learning-rate schedule, one optimizer step, the EMA, and the step hook.

A trainer writes only what one of its steps computes (`step(index)`); `run_steps` calls it `steps` times,
advances the schedule, reports `Progress(step, of, eta_s)` to a `StepObserver` after each step (the ETA
from the measured seconds per step) and raises `Cancelled` at the next step once the observer asks. The
tqdm bar of the command lines is one observer (`TqdmObserver`) beside others (a job's live channel);
`Observers` hands every step to each of them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from deployments.progress import Cancelled, Progress, StepObserver


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then a cosine from 1 down to a floor of 0.05 (a Python float, so the
    optimizer's and schedule's state load with torch.load(weights_only=True))."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Each parameter group's `lr` times `cosine_with_warmup` at the step about to be taken."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_with_warmup(step, total, warmup))


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    clip_parameters: Iterable[torch.nn.Parameter] | None = None,
    max_grad_norm: float = 1.0,
) -> float:
    """Backward, the gradient norm of `clip_parameters` clipped to `max_grad_norm` where given, one update;
    the loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_parameters is not None:
        torch.nn.utils.clip_grad_norm_(clip_parameters, max_grad_norm)
    optimizer.step()
    return loss.item()


def ema_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `model` to hold its exponential moving average."""
    return copy.deepcopy(model).requires_grad_(False)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for averaged, live in zip(ema.parameters(), model.parameters()):
        averaged.lerp_(live, 1 - decay)


def ema_step(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, model: torch.nn.Module, ema: torch.nn.Module, decay: float
) -> float:
    """A step as the shapes trainers take it: `model`'s gradient norm clipped to 1, one update, then the EMA."""
    value = optimizer_step(optimizer, loss, clip_parameters=model.parameters())
    update_ema(ema, model, decay)
    return value


class Observers:
    """Several step observers as one: each sees every step, and any of them may ask the loop to stop."""

    def __init__(self, *observers: StepObserver | None):
        self.observers = [observer for observer in observers if observer is not None]

    def on_step(self, progress: Progress) -> None:
        for observer in self.observers:
            observer.on_step(progress)

    def cancel_requested(self, job_id: str) -> bool:
        return any(observer.cancel_requested(job_id) for observer in self.observers)


class TqdmObserver:
    """A tqdm bar for a command line; `postfix` (e.g. the running loss) is shown beside it after each step.
    It never asks to stop."""

    def __init__(self, desc: str, postfix: Callable[[], dict] | None = None, **tqdm_options):
        self.desc, self.postfix, self.tqdm_options = desc, postfix, tqdm_options
        self.bar: tqdm | None = None

    def on_step(self, progress: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(total=progress.of, desc=self.desc, unit="step", **self.tqdm_options)
        self.bar.update(progress.step - self.bar.n)
        if self.postfix is not None:
            self.bar.set_postfix(self.postfix())
        if progress.step >= progress.of:
            self.bar.close()

    def cancel_requested(self, job_id: str) -> bool:
        return False


def run_steps(
    steps: int,
    step: Callable[[int], None],
    observer: StepObserver | None = None,
    job_id: str = "",
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    """`step(0)` .. `step(steps - 1)`, the schedule advanced after each, the observer told after each and
    asked before the first and after each; `Cancelled` as soon as it wants the job stopped."""
    observer = observer if observer is not None else Observers()
    _stop_if_asked(observer, job_id, 0, steps)
    started = time.monotonic()
    for index in range(steps):
        step(index)
        if schedule is not None:
            schedule.step()
        done = index + 1
        seconds_per_step = (time.monotonic() - started) / done
        observer.on_step(Progress(job_id, done, steps, seconds_per_step * (steps - done), updated_at=time.time()))
        _stop_if_asked(observer, job_id, done, steps)


def _stop_if_asked(observer: StepObserver, job_id: str, done: int, steps: int) -> None:
    if observer.cancel_requested(job_id):
        raise Cancelled(f"{job_id or 'training'} stopped on request after step {done} of {steps}")
