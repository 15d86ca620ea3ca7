"""A request of a generate call is handed on when its own images are made, not when the call's last pass ends
(deployments/finishing.py, serve_apps/workers.py outcomes_as_done)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serve_apps.workers import outcomes_as_done
from tests.unit.test_workers import Recorder, make_request


def test_a_small_request_is_handed_on_before_a_larger_one_in_its_call_has_run(denoiser, prompts):
    steps_at_done: dict[int, list] = {}
    observer = Recorder()
    small = make_request(prompts[0], width=64, height=64, steps=2)
    large = make_request(prompts[1], width=512, height=512, steps=8)

    def on_done(index, result):
        steps_at_done[index] = [(p.job_id, p.step) for p in observer.seen]
        assert result.images and all(image is not None for image in result.images), "handed on with its images"

    results = denoiser.generate([small, large], observer, on_done=on_done)
    assert sorted(steps_at_done) == [0, 1]
    large_steps_then = [step for job_id, step in steps_at_done[0] if job_id == "request-1"]
    assert max(large_steps_then, default=0) < 8, "the small one was done before the large one's last step"
    assert [len(r.images) for r in results] == [1, 1] and results[0].manifest is not None
    alone = denoiser.generate([small, large])
    assert [r.images for r in alone] == [r.images for r in results], "the same bytes, handed on or not"


def test_a_cancelled_request_is_handed_on_empty(denoiser, prompts):
    done: dict[int, object] = {}
    observer = Recorder(cancel=lambda job_id, _seen: job_id == "request-0")
    requests = [make_request(prompts[0]), make_request(prompts[1], width=128, height=128)]
    denoiser.generate(requests, observer, on_done=lambda index, result: done.setdefault(index, result))
    assert done[0].cancelled and done[0].images == [] and done[0].manifest is None
    assert not done[1].cancelled and len(done[1].images) == 1


async def collect(work, jobs) -> list:
    return [item async for item in outcomes_as_done(work, jobs)]


def test_outcomes_come_as_the_thread_hands_them_over():
    def work(jobs, on_outcome):
        assert threading.current_thread() is not threading.main_thread()
        for index in reversed(range(len(jobs))):
            on_outcome(index, f"outcome {jobs[index]}")
        return None

    assert asyncio.run(collect(work, ["a", "b", "c"])) == [(2, "outcome c"), (1, "outcome b"), (0, "outcome a")]


def test_a_failure_after_some_outcomes_is_raised_after_them():
    seen = []

    def work(jobs, on_outcome):
        on_outcome(0, "first")
        raise RuntimeError("the pass failed")

    async def run():
        with pytest.raises(RuntimeError, match="the pass failed"):
            async for item in outcomes_as_done(work, ["a", "b"]):
                seen.append(item)

    asyncio.run(run())
    assert seen == [(0, "first")]
