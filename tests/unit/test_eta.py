"""ETA and deadlines without Ray: the arithmetic on a fake queue, the running figures learned from records, the
estimator with a fake clock, what a deadline refusal suggests, the guard that cancels a job queued past its
deadline, and a refused submit that leaves no row."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError

from deployments.contracts import GenerationParams
from deployments.progress import Progress
from serve_apps.api.deadline_refusal import deadline_unmet
from serve_apps.api.protocol import GenerateRequest
from serve_apps.api.views import JobViews
from serve_apps.config import AppArgs
from serve_apps.jobs.deadlines import DEADLINE_PASSED, DeadlineUnmet, unless_queued_past_deadline
from serve_apps.jobs.estimates import EtaEstimator
from serve_apps.jobs.eta import (
    JobWork,
    Queue,
    Running,
    Serving,
    call_ends,
    call_s,
    calls_by_arrival,
    job_work,
    ready_in_s,
    what_fits,
)
from serve_apps.jobs.kind import JobCancelled
from serve_apps.jobs.pace import Curve, Pace, learn_pace, pass_samples
from serve_apps.jobs.records import JobRecord, JobStatus, Stage
from serve_apps.jobs.service import JobService
from serve_apps.security.signing import UrlSigner
from serve_apps.store import Database
from serve_apps.store.job_stats import JobStats
from serve_apps.store.storage import JobStore, new_job_id

MODEL = "flux-2-klein-4b"
# a step: 1 s per megapixel of each image in the pass; a pass's decode 0.2 s per output megapixel; 0.05 s encode
PACE = Pace(Curve(1.0), Curve(0.2), encode_s=0.05, overhead_s=0.1, cold_start_s=30.0, learned_from=10)
ONE_REPLICA = Serving(
    replicas=1, requests_per_call=4, images_per_pass=8, pixels_per_pass=8 * 1024 * 1024, batch_wait_s=0.0
)
MEGA = JobWork(width=1024, height=1024, steps=4, images=1)


def params(width=1024, height=1024, steps=4, num_images=1, guidance=None) -> GenerationParams:
    return GenerationParams(
        prompt="p", width=width, height=height, steps=steps, guidance=guidance, seed=1, num_images=num_images
    )


# -- the arithmetic ------------------------------------------------------------------------------------------


def test_an_empty_queue_costs_the_job_its_own_pass_encode_and_overhead():
    own_pass_s = 4 * 1.0 + 0.2
    assert ready_in_s(Queue(), MEGA, PACE, ONE_REPLICA) == pytest.approx(0.05 + own_pass_s + 0.1)
    waiting = Serving(1, 4, 8, 8 * 1024 * 1024, batch_wait_s=0.5)
    assert ready_in_s(Queue(), MEGA, PACE, waiting) == pytest.approx(0.05 + own_pass_s + 0.1), (
        "a lone job on an idle replica skips the window"
    )
    assert ready_in_s(Queue(waiting=[MEGA]), MEGA, PACE, waiting) == pytest.approx(0.5 + 2 * own_pass_s + 0.1), (
        "a call not full waits the window from its first job's arrival (the two share one pass)"
    )
    behind = Queue(running=[Running(MEGA, 2.0, ("pass",))])
    assert ready_in_s(behind, MEGA, PACE, waiting) == pytest.approx(2.0 + 0.2 + own_pass_s + 0.1), (
        "the window runs while the replica works"
    )


def test_jobs_of_one_size_share_a_pass_and_the_queue_leaves_in_calls_of_max_batch_size():
    assert call_s([MEGA] * 3, PACE, ONE_REPLICA) == pytest.approx(4 * 3.0 + 0.6), "one pass of three"
    small = JobWork(width=512, height=512, steps=4, images=1)
    assert call_s([MEGA, small], PACE, ONE_REPLICA) == pytest.approx(
        call_s([MEGA], PACE, ONE_REPLICA) + call_s([small], PACE, ONE_REPLICA)
    )
    seven_ahead = Queue(waiting=[MEGA] * 7)  # calls of 4: [4 ahead] then [3 ahead + own]
    expected = 0.05 + call_s([MEGA] * 4, PACE, ONE_REPLICA) + call_s([MEGA] * 4, PACE, ONE_REPLICA) + 0.1
    assert ready_in_s(seven_ahead, MEGA, PACE, ONE_REPLICA) == pytest.approx(expected - 0.05)
    two = Serving(2, 4, 8, 8 * 1024 * 1024, 0.0)
    assert ready_in_s(seven_ahead, MEGA, PACE, two) < 0.6 * ready_in_s(seven_ahead, MEGA, PACE, ONE_REPLICA)


def test_a_new_job_never_joins_the_calls_of_jobs_already_handed_to_the_denoiser():
    handed = ready_in_s(Queue(waiting=[MEGA] * 2, handed=2), MEGA, PACE, ONE_REPLICA)
    joining = ready_in_s(Queue(waiting=[MEGA] * 2), MEGA, PACE, ONE_REPLICA)
    assert handed == pytest.approx(call_s([MEGA] * 2, PACE, ONE_REPLICA) + call_s([MEGA], PACE, ONE_REPLICA) + 0.1)
    assert joining == pytest.approx(0.05 + call_s([MEGA] * 3, PACE, ONE_REPLICA) + 0.1)
    stored = Pace(PACE.step, PACE.decode, 0.0, 0.0, 0.0, 1, store_s_per_image=0.5)
    assert (
        call_s([JobWork(64, 64, 1, 3)], stored, ONE_REPLICA) - call_s([JobWork(64, 64, 1, 3)], PACE, ONE_REPLICA) == 1.5
    )


def test_a_job_is_done_with_its_own_last_pass_not_with_its_call():
    small = JobWork(width=512, height=512, steps=4, images=1)
    stored = Pace(PACE.step, PACE.decode, 0.0, 0.0, 0.0, 1, store_s_per_image=0.5)
    small_done, mega_done, call_ends_at = call_ends([small, MEGA], stored, ONE_REPLICA)
    small_pass_s, mega_pass_s = 4 * 0.25 + 0.05, 4 * 1.0 + 0.2
    assert small_done == pytest.approx(small_pass_s + 0.5), "its pass ran first, then its image was stored"
    assert mega_done == call_ends_at == pytest.approx(small_pass_s + mega_pass_s + 0.5)
    assert call_s([small, MEGA], stored, ONE_REPLICA) == call_ends_at
    behind_a_mega_call = ready_in_s(Queue(waiting=[MEGA]), small, PACE, ONE_REPLICA)
    assert behind_a_mega_call == pytest.approx(0.05 + mega_pass_s + small_pass_s + 0.1), "the own job is last"
    first_in_call = call_ends([MEGA, small, MEGA], PACE, ONE_REPLICA)
    assert first_in_call[0] == first_in_call[2] < first_in_call[1], "jobs sharing the first pass end with it"


def test_calls_form_as_jobs_arrive_so_a_later_job_never_joins_an_earlier_call():
    assert calls_by_arrival([10.0, 9.99, 9.0, 0.02, 0.0], size=4, window_s=0.05) == [[0, 1], [2], [3, 4]]
    assert calls_by_arrival([0.0] * 5, size=4, window_s=0.05) == [[0, 1, 2, 3], [4]], "a call holds at most size"
    waiting = Serving(1, 4, 8, 8 * 1024 * 1024, batch_wait_s=0.05)
    own_pass_s = 4 * 1.0 + 0.2
    long_ago = ready_in_s(Queue(waiting=[MEGA], ages_s=[5.0]), MEGA, PACE, waiting)
    assert long_ago == pytest.approx(own_pass_s + own_pass_s + 0.1), "its own call, after the other's"
    just_now = ready_in_s(Queue(waiting=[MEGA], ages_s=[0.01]), MEGA, PACE, waiting)
    assert just_now == pytest.approx(0.05 + 2 * own_pass_s + 0.1), "within the window: one pass of two"
    polled = ready_in_s(Queue(waiting=[MEGA], ages_s=[5.0], own_age_s=4.99), MEGA, PACE, waiting)
    assert polled == pytest.approx(just_now), "a job asked about later is placed by its own arrival: one pass of two"


def test_a_pass_is_capped_by_its_images_and_pixels():
    capped = Serving(1, 8, images_per_pass=2, pixels_per_pass=8 * 1024 * 1024, batch_wait_s=0.0)
    assert call_s([JobWork(1024, 1024, 4, 4)], PACE, capped) == pytest.approx(2 * (4 * 2.0 + 0.4))
    assert capped.images_in_pass(JobWork(2048, 2048, 4, 1)) == 2
    assert Serving(1, 8, 12, 12 * 1024 * 1024, 0).images_in_pass(JobWork(2048, 2048, 4, 1)) == 3


def test_a_running_pass_holds_its_replica_for_what_its_progress_says_is_left():
    running = [Running(MEGA, 3.0, ("pass-a",)), Running(MEGA, 3.0, ("pass-a",))]
    alone = ready_in_s(Queue(), MEGA, PACE, ONE_REPLICA)
    behind = ready_in_s(Queue(running=running), MEGA, PACE, ONE_REPLICA)
    assert behind == pytest.approx(3.0 + 2 * 0.2 + alone - 0.05), "left, its two images' decode, then the job"


def test_a_model_scaled_to_zero_adds_a_cold_start_and_unread_jobs_count_at_the_mean():
    cold = Serving(0, 4, 8, 8 * 1024 * 1024, 0.0)
    assert ready_in_s(Queue(), MEGA, PACE, cold) == pytest.approx(
        30.0 + ready_in_s(Queue(), MEGA, PACE, ONE_REPLICA) - 0.05
    )
    read = ready_in_s(Queue(waiting=[MEGA] * 4), MEGA, PACE, ONE_REPLICA)
    with_unread = ready_in_s(Queue(waiting=[MEGA] * 4, unread=10), MEGA, PACE, ONE_REPLICA)
    assert with_unread == pytest.approx(read + 10 * call_s([MEGA], PACE, ONE_REPLICA))


def test_cfg_doubles_the_images_a_step_runs():
    with_cfg, without = job_work(params(guidance=4.0)), job_work(params())
    assert (with_cfg.cfg_factor, without.cfg_factor) == (2, 1) and with_cfg.sequence_mp_each == pytest.approx(1.0)
    assert call_s([with_cfg], PACE, ONE_REPLICA) == pytest.approx(4 * 2.0 + 0.2)


# -- what a deadline refusal suggests ------------------------------------------------------------------------


def test_the_refusal_picks_the_largest_steps_images_and_square_that_fit():
    own = JobWork(1024, 1024, steps=8, images=4)
    eta = ready_in_s(Queue(), own, PACE, ONE_REPLICA)
    deadline = eta / 2
    fits = what_fits(Queue(), own, PACE, ONE_REPLICA, deadline)
    for field, value in (("steps", fits.steps), ("images", fits.num_images)):
        assert ready_in_s(Queue(), JobWork(**{**own.__dict__, field: value}), PACE, ONE_REPLICA) <= deadline
        assert ready_in_s(Queue(), JobWork(**{**own.__dict__, field: value + 1}), PACE, ONE_REPLICA) > deadline
    assert fits.side_px % 64 == 0 and fits.side_px < 1024
    assert ready_in_s(Queue(), JobWork(fits.side_px, fits.side_px, 8, 4), PACE, ONE_REPLICA) <= deadline
    assert ready_in_s(Queue(), JobWork(fits.side_px + 64, fits.side_px + 64, 8, 4), PACE, ONE_REPLICA) > deadline


def test_behind_a_long_queue_nothing_fits_and_the_message_says_to_retry_later():
    queue = Queue(waiting=[MEGA] * 40)
    own = JobWork(1024, 1024, 4, 1)
    eta = ready_in_s(queue, own, PACE, ONE_REPLICA)
    fits = what_fits(queue, own, PACE, ONE_REPLICA, 1.0)
    assert (fits.steps, fits.num_images, fits.side_px) == (None, None, None) and fits.smallest_eta_s > 1.0
    unmet = DeadlineUnmet(MODEL, {"steps": 4, "num_images": 1, "width": 1024, "height": 1024}, eta, 1.0, fits)
    assert "retry later" in str(unmet) and f"{eta:.1f} s" in str(unmet) and unmet.suggestions() == {}


# -- the running figures --------------------------------------------------------------------------------------


def ready_record(
    width: int, images_in_pass: int, step_s: float, steps: int = 4, decode_s: float = 0.0, node: str = "n"
) -> JobRecord:
    record = JobRecord(
        id=new_job_id(), model=MODEL, key_id="k", params=params(width, width, steps), status=JobStatus.READY
    )
    record.timings_s = {
        "queue": 0.5,
        "encode": 0.05,
        "denoise": step_s * steps,
        "decode": decode_s,
        "store": 0.01,
        "total": 0.5 + 0.05 + step_s * steps + decode_s + 0.01 + 0.15,
    }
    record.updated_at = record.created_at + record.timings_s["total"] + 0.05  # its final write came after
    record.batch = {"images": images_in_pass, "requests": images_in_pass, "node": node}
    return record


def test_the_figures_fit_a_step_per_image_as_linear_and_square_in_its_megapixels_counting_each_pass_once():
    truth = Curve(0.5, 0.1)
    records = []
    for width, images in ((256, 1), (512, 2), (1024, 1), (1024, 4), (512, 8)):
        mp = width * width / 1024**2
        records += [
            ready_record(width, images, truth.at(images, mp), decode_s=Curve(0.1).at(images, mp)) for _ in range(images)
        ]
    assert len(pass_samples(records)) == 5, "the jobs of one pass give one sample"
    pace = learn_pace(records, PACE)
    assert pace.step.per_mp_s == pytest.approx(0.5, rel=1e-6) and pace.step.per_mp2_s == pytest.approx(0.1, rel=1e-6)
    assert pace.decode.per_mp_s == pytest.approx(0.1, rel=1e-6) and pace.decode.per_mp2_s == pytest.approx(0, abs=1e-9)
    assert pace.overhead_s == pytest.approx(0.2, abs=1e-6) and pace.encode_s == pytest.approx(0.05)
    assert pace.store_s_per_image == pytest.approx(0.01)
    assert pace.learned_from == len(records) and "measured" in pace.source


def test_one_size_only_gives_a_rate_and_no_job_gives_the_cost_models_prior():
    pace = learn_pace([ready_record(512, 1, 0.3, node=str(n)) for n in range(3)], PACE)
    assert pace.step.at(1, 0.25) == pytest.approx(0.3)
    assert learn_pace([], PACE) is PACE


# -- the estimator, with a fake clock, queue and progress -----------------------------------------------------


class FakeStats:
    def __init__(self, unfinished: list[JobRecord], ready: list[JobRecord]):
        self.unfinished_records, self.ready = unfinished, ready
        self.reads = 0

    def unfinished(self, model, limit):
        return self.unfinished_records[:limit], max(0, len(self.unfinished_records) - limit)

    def recent_ready(self, model, limit):
        self.reads += 1
        return self.ready[:limit]


def pending(created_at: float, stage: Stage = Stage.QUEUED) -> JobRecord:
    return JobRecord(
        id=new_job_id(), model=MODEL, key_id="k", params=params(512, 512), created_at=created_at, stage=stage
    )


def estimator(stats, progress: dict, now: list[float]) -> EtaEstimator:
    async def read_progress(job_id):
        return progress.get(job_id)

    args = AppArgs(models={MODEL: {"batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.0}}})
    return EtaEstimator(stats, args, read_progress, replicas=lambda: {}, clock=lambda: now[0])


def test_the_estimator_counts_the_queue_ahead_ages_live_progress_and_caches_the_figures():
    now = [1000.0]
    running, queued = pending(1.0, Stage.DENOISING), pending(2.0)
    ready = [ready_record(512, 1, 0.2, node=str(n)) for n in range(3)]
    stats = FakeStats([running, queued], ready)
    progress = {running.id: Progress(running.id, 2, 4, eta_s=0.4, updated_at=999.9)}
    eta = estimator(stats, progress, now)
    pace = asyncio.run(eta.pace(MODEL))
    mine = params(512, 512)
    at_submit = asyncio.run(eta.at_submit(MODEL, mine, None))
    serving = asyncio.run(eta.serving(MODEL))
    queue = Queue([Running(job_work(running.params), 0.3, (0.4, 2, 4))], [job_work(queued.params)])
    assert at_submit == pytest.approx(ready_in_s(queue, job_work(mine), pace, serving), abs=0.01)
    now[0] += 1.0
    later = asyncio.run(eta.of_job(running, Progress(running.id, 3, 4, eta_s=0.2, updated_at=1000.9)))
    assert later == pytest.approx(0.1 + pace.decode.at(1, 0.25) + pace.overhead_s, abs=0.01)
    assert asyncio.run(eta.of_job(queued, None)) < at_submit, "a queued job's ETA counts only the jobs ahead of it"
    assert stats.reads == 1, "the running figures are recomputed at most every PACE_TTL_S"
    now[0] += 10
    asyncio.run(eta.pace(MODEL))
    assert stats.reads == 2


def test_the_estimator_refuses_a_deadline_it_cannot_meet_with_what_fits():
    now = [1000.0]
    eta = estimator(FakeStats([pending(float(n)) for n in range(8)], []), {}, now)
    with pytest.raises(DeadlineUnmet) as refused:
        asyncio.run(eta.at_submit(MODEL, params(1024, 1024, steps=8), 0.001))
    assert refused.value.eta_s > 0.001 and "cannot be met" in str(refused.value)
    assert asyncio.run(eta.at_submit(MODEL, params(64, 64, steps=1), 10_000)) > 0


# -- the deadline guard and the refusal over HTTP -------------------------------------------------------------


class FakeSignals:
    def __init__(self, progress: Progress | None):
        self._progress, self.cancels = progress, []

    async def progress(self, job_id):
        return self._progress

    async def request_cancel(self, job_id):
        self.cancels.append(job_id)


def test_a_job_still_queued_at_its_deadline_is_cancelled_and_one_started_runs_on():
    record = pending(time.time())
    record.deadline_s = 0.1

    async def slow():
        await asyncio.sleep(0.5)
        return "images"

    signals = FakeSignals(None)
    with pytest.raises(JobCancelled) as ended:
        asyncio.run(unless_queued_past_deadline(record, SimpleNamespace(signals=signals), slow()))
    assert ended.value.reason == DEADLINE_PASSED and signals.cancels == [record.id]
    record.created_at = time.time()  # a second one, whose denoising starts before its deadline
    started = FakeSignals(Progress(record.id, 1, 4))
    assert asyncio.run(unless_queued_past_deadline(record, SimpleNamespace(signals=started), slow())) == "images"
    assert started.cancels == []
    record.created_at = time.time() - 10  # adopted long after its deadline: it never starts
    with pytest.raises(JobCancelled):
        asyncio.run(unless_queued_past_deadline(record, SimpleNamespace(signals=FakeSignals(None)), slow()))


@pytest.mark.parametrize("deadline_s", [0, -1, 3601, float("inf")])
def test_a_deadline_out_of_range_is_refused_saying_the_range(deadline_s):
    with pytest.raises(ValidationError, match="above 0 and at most 3600"):
        GenerateRequest(prompt="p", deadline_s=deadline_s)


def test_a_refused_submit_leaves_no_job_row_and_answers_429_with_what_fits(tmp_path):
    args = AppArgs(storage_url=str(tmp_path), models={MODEL: {}})
    db = Database.open(args.database_url)
    service = JobService(
        db.jobs, JobStore(str(tmp_path)), {}, {}, args, {MODEL: SimpleNamespace()}, JobViews(UrlSigner(b"k", 60))
    )
    service.submitter.params = lambda *_args: (params(1024, 1024, steps=8, num_images=2), [])

    app = FastAPI(exception_handlers={DeadlineUnmet: deadline_unmet})

    @app.post("/v1/m")
    async def route(request: Request, body: GenerateRequest):
        record = await service.submit(MODEL, body, "0123456789ab", "http://test")
        return {"id": record.id, "eta_s": record.submit_eta_s}

    async def call(body):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post("/v1/m", json=body)

    refused = asyncio.run(call({"prompt": "p", "deadline_s": 0.001}))
    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert "cannot be met" in body["detail"] and body["eta_s"] > 0.001 and int(refused.headers["Retry-After"]) >= 1
    assert db.jobs.count_pending() == 0 and list(db.jobs.all_jobs()) == [], "no row left behind"
    assert JobStats(db.engine).unfinished(MODEL, 10) == ([], 0)
