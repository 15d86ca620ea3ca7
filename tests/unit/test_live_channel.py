"""The live channel in one process (no Ray): publish, read, cancel, end, wait for a change, its bounds,
and the step loop's observer over it (throttled progress, batched cancel that never blocks)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

from deployments.progress import Progress
from serve_apps.live import InProcessChannel, LiveObserver
from serve_apps.live.state import LiveState

JOB = "a" * 32
OTHER = "b" * 32


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_publish_read_cancel_and_end():
    channel = InProcessChannel()

    async def scenario():
        assert await channel.progress(JOB) is None and await channel.version(JOB) == 0
        await channel.publish(Progress(JOB, 1, 4, eta_s=3.0, preview=b"png"))
        first = await channel.version(JOB)
        assert (await channel.progress(JOB)).preview == b"png", "the preview travels with its progress"
        assert not await channel.cancel_requested(JOB)
        await channel.request_cancel(JOB)
        assert await channel.cancel_requested(JOB) and not await channel.cancel_requested(OTHER)
        assert await channel.version(JOB) > first
        assert channel.ask_cancelled([JOB, OTHER]).result() == {JOB}
        await channel.finish(OTHER)
        assert channel.ask_cancelled([JOB, OTHER]).result() == {JOB, OTHER}, "an ended job's workers stop"
        await channel.finish(JOB)
        assert (await channel.progress(JOB)).step == 1, "where it stopped, shown with its final state"
        channel.send(Progress(JOB, 4, 4))
        assert (await channel.progress(JOB)).step == 1, "a late step of an ended job changes nothing"

    asyncio.run(scenario())


def test_wait_for_change_returns_at_a_change_or_at_its_timeout():
    channel = InProcessChannel()

    async def scenario():
        started = time.monotonic()
        assert await channel.wait_for_change(JOB, 0, 0.05) == 0
        assert time.monotonic() - started >= 0.05
        waiting = asyncio.create_task(channel.wait_for_change(JOB, 0, 30))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await channel.publish(Progress(JOB, 1, 4))
        version = await asyncio.wait_for(waiting, 1)
        assert version == await channel.version(JOB) > 0
        assert await channel.wait_for_change(JOB, version - 1, 30) == version, "a change already made: at once"
        assert channel.state.waiting() == 0

    asyncio.run(scenario())


def test_a_step_loop_in_a_thread_wakes_a_reader_on_the_event_loop():
    channel = InProcessChannel()

    async def scenario():
        waiting = asyncio.create_task(channel.wait_for_change(JOB, 0, 30))
        await asyncio.sleep(0.01)
        worker = threading.Thread(target=channel.send, args=(Progress(JOB, 2, 4),))
        worker.start()
        await asyncio.wait_for(waiting, 1)
        worker.join()
        return (await channel.progress(JOB)).step

    assert asyncio.run(scenario()) == 2


def test_a_restarted_holder_gives_versions_above_the_lost_ones():
    first = LiveState()
    for step in range(1, 100):
        first.publish(Progress(JOB, step, 100))
    time.sleep(0.001)
    restarted = LiveState()
    restarted.publish(Progress(JOB, 1, 100))
    assert restarted.version(JOB) > first.version(JOB)


def test_memory_is_bounded_by_count_and_by_age():
    clock = FakeClock()
    state = LiveState(max_entries=3, idle_ttl_s=60, ended_ttl_s=5, clock=clock)
    for number in range(5):
        state.publish(Progress(f"{number:032x}", 1, 4))
    assert len(state) == 3 and state.progress(f"{0:032x}") is None, "the least recently changed go first"
    state.finish(f"{4:032x}")
    clock.now += 10  # past the ended TTL and the sweep interval
    state.publish(Progress(f"{3:032x}", 2, 4))
    assert len(state) == 2 and state.progress(f"{4:032x}") is None
    clock.now += 100
    state.publish(Progress(JOB, 1, 4))
    assert len(state) == 1


class CountingChannel(InProcessChannel):
    """Counts the step loop's calls; `answers` holds the futures it gave, to settle them by hand."""

    def __init__(self, settle_at_once: bool = True):
        super().__init__()
        self.sent: list[Progress] = []
        self.asked: list[tuple[str, ...]] = []
        self.answers: list[Future] = []
        self.settle_at_once = settle_at_once

    def send(self, progress: Progress) -> None:
        self.sent.append(progress)
        super().send(progress)

    def ask_cancelled(self, job_ids):
        self.asked.append(tuple(job_ids))
        if self.settle_at_once:
            return super().ask_cancelled(job_ids)
        answer = Future()
        self.answers.append(answer)
        return answer


def test_the_observer_sends_progress_at_most_every_interval_and_always_the_last_step():
    clock, channel = FakeClock(), CountingChannel()
    observer = LiveObserver(channel, [JOB], publish_every_s=0.1, clock=clock)
    for step in range(1, 9):
        observer.on_step(Progress(JOB, step, 8))
        clock.now += 0.04
    assert [p.step for p in channel.sent] == [1, 4, 7, 8]


def test_the_observer_asks_once_for_the_whole_batch_and_never_waits_for_the_answer():
    clock, channel = FakeClock(), CountingChannel(settle_at_once=False)
    observer = LiveObserver(channel, [JOB, OTHER, JOB], ask_every_s=0.25, clock=clock)
    assert not observer.cancel_requested(JOB) and not observer.cancel_requested(OTHER)
    assert channel.asked == [(JOB, OTHER)], "one question for every job of the batch"
    clock.now += 1.0
    assert not observer.cancel_requested(JOB), "the answer has not come: the loop goes on"
    assert len(channel.asked) == 1, "no second question while one is out"
    channel.answers[0].set_result({OTHER})
    assert observer.cancel_requested(OTHER), "the answer is read once it has come"
    assert observer.cancel_requested(OTHER) and len(channel.asked) == 1, "a cancel once seen stays seen, unasked"
    assert not observer.cancel_requested(JOB) and len(channel.asked) == 2, "due since the last question"
    channel.answers[1].set_result(set())
    clock.now += 0.1
    observer.cancel_requested(JOB)
    observer.cancel_requested(JOB)
    assert len(channel.asked) == 2, "asked at most every ask_every_s"
    clock.now += 0.2
    observer.cancel_requested(JOB)
    assert len(channel.asked) == 3
    clock.now += 10  # that question was lost with a restarting channel: asked again
    observer.cancel_requested(JOB)
    assert len(channel.asked) == 4
    channel.answers[3].set_exception(ConnectionError("the channel restarts"))
    clock.now += 0.3
    assert not observer.cancel_requested(JOB), "a failed answer is no cancel"
    assert observer.cancel_requested(OTHER)


def test_the_first_question_is_waited_for_so_a_job_cancelled_while_queued_takes_no_step():
    clock, channel = FakeClock(), CountingChannel(settle_at_once=False)
    observer = LiveObserver(channel, [JOB, OTHER], clock=clock)
    threading.Timer(0.05, lambda: channel.answers[0].set_result({OTHER})).start()
    observer.ask_first(timeout_s=5.0)
    assert observer.cancel_requested(OTHER) and not observer.cancel_requested(JOB)
    assert len(channel.asked) == 1, "the first question's answer serves the first pass"
    silent = LiveObserver(CountingChannel(settle_at_once=False), [JOB], clock=clock)
    started = time.perf_counter()
    silent.ask_first(timeout_s=0.05)
    assert time.perf_counter() - started < 1.0 and not silent.cancel_requested(JOB), "an unanswered one is no cancel"


def test_a_cancel_on_the_channel_stops_the_denoiser_at_its_next_step(denoiser, prompt):
    from tests.unit.test_workers import make_request

    channel = InProcessChannel()
    steps: list[int] = []

    class CancelAfterTwo(LiveObserver):
        def on_step(self, progress: Progress) -> None:
            super().on_step(progress)
            steps.append(progress.step)
            if progress.step == 2:
                channel.state.request_cancel(JOB)  # as another replica would, between two steps

    observer = CancelAfterTwo(channel, [JOB], publish_every_s=0, ask_every_s=0)
    [result] = denoiser.generate([make_request(prompt, job_id=JOB)], observer)
    assert result.cancelled and result.images == []
    assert steps == [1, 2] and channel.state.progress(JOB).step == 2
