"""The denoising loop's step hook without a model: steps and ETA across passes, and cancel."""

from __future__ import annotations

import pytest

from deployments.progress import Cancelled, Progress, StepClock, StepHook


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Observer:
    def __init__(self, cancelled: set[str] = frozenset()):
        self.seen: list[Progress] = []
        self.cancelled = set(cancelled)

    def on_step(self, progress: Progress) -> None:
        self.seen.append(progress)

    def cancel_requested(self, job_id: str) -> bool:
        return job_id in self.cancelled


def run_pass(clock: StepClock, time: FakeClock, pass_index: int, jobs: dict, observer, steps: int, step_s: float):
    hook = StepHook(clock, pass_index, jobs, observer)
    hook.start()
    for step in range(steps):
        time.now += step_s
        assert hook(None, step, None, {"latents": "unchanged"}) == {"latents": "unchanged"}


def test_a_request_over_two_passes_counts_its_steps_over_both_with_an_eta_at_the_measured_pace():
    time = FakeClock()
    # pass 0: requests 0 and 1 (4 steps); pass 1: request 1 again (4 steps)
    clock = StepClock([(4, (0, 1)), (4, (1,))], clock=time)
    observer = Observer()
    run_pass(clock, time, 0, {0: "a", 1: "b"}, observer, 4, 0.5)
    run_pass(clock, time, 1, {1: "b"}, observer, 4, 0.5)
    a = [(p.step, p.of, p.eta_s) for p in observer.seen if p.job_id == "a"]
    b = [(p.step, p.of, p.eta_s) for p in observer.seen if p.job_id == "b"]
    assert a == [(1, 4, 1.5), (2, 4, 1.0), (3, 4, 0.5), (4, 4, 0.0)]
    assert b == [(step, 8, (8 - step) * 0.5) for step in range(1, 9)]


def test_a_pass_stops_only_when_every_job_in_it_is_cancelled():
    time = FakeClock()
    clock = StepClock([(4, (0, 1))], clock=time)
    run_pass(clock, time, 0, {0: "a", 1: "b"}, Observer({"a"}), 4, 0.1)  # b keeps the pass running
    observer = Observer({"a", "b"})
    hook = StepHook(StepClock([(4, (0, 1))], clock=time), 0, {0: "a", 1: "b"}, observer)
    hook.start()
    with pytest.raises(Cancelled):
        hook(None, 0, None, {})
    assert [p.step for p in observer.seen] == [1, 1], "the step's progress is reported before it stops"


def test_progress_is_torch_free_json():
    progress = Progress("a", 2, 4, eta_s=1.5, updated_at=10.0)
    assert progress.to_json() == {"step": 2, "total": 4, "eta_s": 1.5, "updated_at": 10.0}
