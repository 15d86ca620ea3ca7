"""JobService: durable async jobs from submit to Ready or Error, whatever dies on the way.

A job is a record in storage. The ingress replica that owns it runs encode -> denoise and
refreshes a heartbeat while it waits. If a denoiser replica dies under a job, the attempt
fails and the job is retried up to `max_attempts`, then ends Error with the reason. If the
ingress replica itself dies, the heartbeat stops: any ingress replica that sees the job
stale (on a status read or in its periodic sweep) adopts and retries it. No job stays
Pending forever. Seeds are drawn at submit, so a retry makes the same images.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
import uuid

from deployments.params import MAX_SEED, GenerationRequest, InvalidRequestError
from serve_apps.config import AppArgs
from serve_apps.protocol import GenerateRequest, JobStatus
from serve_apps.storage import JobStore, new_job_id
from serve_apps.workers import DenoiseJob

logger = logging.getLogger("flux_serve.jobs")


class JobService:
    def __init__(self, store: JobStore, encoders: dict, denoisers: dict, args: AppArgs, defaults: dict):
        """`encoders` and `denoisers` map a model name to its deployment handle, `defaults` to
        its GenerationDefaults."""
        self.store = store
        self.defaults = defaults
        self.encoders = encoders
        self.denoisers = denoisers
        self.args = args
        self.replica_id = uuid.uuid4().hex[:12]
        self.tasks: dict[str, asyncio.Task] = {}
        self._sweeper: asyncio.Task | None = None

    # -- storage, off the event loop ----------------------------------------------------

    async def _save(self, record: dict) -> None:
        record["updated_at"] = time.time()
        await asyncio.to_thread(self.store.save_job, copy.deepcopy(record))

    async def load(self, job_id: str) -> dict | None:
        return await asyncio.to_thread(self.store.load_job, job_id)

    async def load_progress(self, job_id: str) -> dict | None:
        return await asyncio.to_thread(self.store.load_progress, job_id)

    async def load_image(self, job_id: str, name: str) -> bytes | None:
        return await asyncio.to_thread(self.store.load_image, job_id, name)

    # -- submit and run -----------------------------------------------------------------

    async def submit(self, model: str, request: GenerateRequest, key_id: str) -> dict:
        now = time.time()
        defaults = self.defaults[model]
        width, height = request.size(defaults.width, defaults.height)
        params = {
            "prompt": request.prompt,
            "width": width,
            "height": height,
            "steps": request.steps if request.steps is not None else defaults.steps,
            "guidance": None if defaults.distilled else (request.guidance if request.guidance is not None else defaults.guidance),
            "num_images": request.num_images,
            "output_format": request.output_format,
            "seed": request.seed if request.seed is not None else random.randint(0, MAX_SEED),
        }
        record = {
            "id": new_job_id(),
            "model": model,
            "key_id": key_id,
            "status": JobStatus.PENDING.value,
            "stage": "queued",
            "request": params,
            "seed": params["seed"],
            "attempts": 0,
            "owner": self.replica_id,
            "heartbeat_at": now,
            "created_at": now,
            "updated_at": now,
            "images": [],
            "timings_s": {},
            "batch": {},
            "error": None,
        }
        await self._save(record)
        await asyncio.to_thread(self.store.mark_pending, record["id"])
        self._start(record)
        return record

    def _start(self, record: dict) -> None:
        job_id = record["id"]
        task = asyncio.create_task(self._run(record))
        self.tasks[job_id] = task
        task.add_done_callback(lambda _task: self.tasks.pop(job_id, None))

    async def _run(self, record: dict) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(record))
        try:
            while True:
                record["attempts"] += 1
                try:
                    await asyncio.wait_for(self._attempt(record), timeout=self.args.jobs.timeout_s)
                    return
                except InvalidRequestError as error:
                    return await self._fail(record, f"invalid request: {error}")
                except asyncio.TimeoutError:
                    return await self._fail(record, f"timed out after {self.args.jobs.timeout_s:.0f} s")
                except Exception as error:  # a dead replica, lost actor, or a crash in a worker
                    reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    if record["attempts"] >= self.args.jobs.max_attempts:
                        return await self._fail(
                            record, f"worker failed after {record['attempts']} attempt(s): {reason}"
                        )
                    logger.warning("job %s attempt %d failed (%s); retrying", record["id"], record["attempts"], reason)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, record: dict) -> None:
        while True:
            await asyncio.sleep(self.args.jobs.heartbeat_s)
            record["heartbeat_at"] = time.time()
            await self._save(record)

    async def _attempt(self, record: dict) -> None:
        params = record["request"]
        model = record["model"]
        record["stage"] = "encoding"
        await self._save(record)
        encode_started = time.perf_counter()
        prompt = await self.encoders[model].encode.remote(params["prompt"])
        negative = None
        if params["guidance"] is not None and params["guidance"] > 1.0:
            negative = await self.encoders[model].encode.remote("")
        encode_s = time.perf_counter() - encode_started

        record["stage"] = "denoising"
        await self._save(record)
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            width=params["width"],
            height=params["height"],
            steps=params["steps"],
            guidance=params["guidance"],
            seed=params["seed"],
            num_images=params["num_images"],
            output_format=params["output_format"],
            request_id=record["id"],
        )
        outcome = await self.denoisers[model].generate.remote(DenoiseJob(record["id"], request))
        record.update(
            status=JobStatus.READY.value,
            stage="done",
            images=outcome.images,
            seed=outcome.seed,
            batch=outcome.batch,
            timings_s={"encode": encode_s, **outcome.timings_s, "total": time.time() - record["created_at"]},
        )
        await self._finish(record)

    async def _fail(self, record: dict, reason: str) -> None:
        logger.error("job %s failed: %s", record["id"], reason)
        record.update(status=JobStatus.ERROR.value, stage="done", error=reason)
        await self._finish(record)

    async def _finish(self, record: dict) -> None:
        await self._save(record)
        await asyncio.to_thread(self.store.clear_pending, record["id"])

    # -- orphans ------------------------------------------------------------------------

    def is_stale(self, record: dict) -> bool:
        return (
            record["status"] == JobStatus.PENDING.value
            and record["id"] not in self.tasks
            and time.time() - record["heartbeat_at"] > self.args.jobs.stale_after_s
        )

    async def adopt_if_stale(self, record: dict) -> dict:
        """Take over a job whose owner stopped beating: retry it, or end it if out of attempts."""
        if not self.is_stale(record):
            return record
        if record["attempts"] >= self.args.jobs.max_attempts:
            await self._fail(record, f"the replica running it stopped after {record['attempts']} attempt(s)")
            return record
        logger.warning("adopting stale job %s from replica %s", record["id"], record["owner"])
        record.update(owner=self.replica_id, heartbeat_at=time.time(), stage="queued")
        await self._save(record)
        self._start(record)
        return record

    async def sweep(self) -> None:
        for job_id in await asyncio.to_thread(self.store.pending_job_ids):
            record = await self.load(job_id)
            if record is None:
                await asyncio.to_thread(self.store.clear_pending, job_id)
            elif record["status"] != JobStatus.PENDING.value:
                await asyncio.to_thread(self.store.clear_pending, job_id)
            else:
                await self.adopt_if_stale(record)

    def start_sweeper(self) -> None:
        """Sweep for orphaned jobs now and then every half stale window (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("sweep for orphaned jobs failed")
            await asyncio.sleep(self.args.jobs.stale_after_s / 2)
