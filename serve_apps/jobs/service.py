"""JobService: the one object the routes talk to, over submission, the job core and usage."""

from __future__ import annotations

import asyncio

from deployments.contracts import GenerationDefaults
from deployments.progress import Progress
from lora.registry import AdapterRegistry
from serve_apps.api.finetune_protocol import FinetuneSettings
from serve_apps.api.protocol import GenerateRequest
from serve_apps.api.views import JobViews
from serve_apps.config import AppArgs
from serve_apps.jobs.core import JobCore
from serve_apps.jobs.estimates import EtaEstimator
from serve_apps.jobs.finetune_records import FINETUNE, FinetuneRecord
from serve_apps.jobs.finetunes import Finetunes
from serve_apps.jobs.kinds.finetune import FinetuneKind
from serve_apps.jobs.kinds.generate import GenerateKind
from serve_apps.jobs.pricing import quote_credits
from serve_apps.jobs.records import JobRecord
from serve_apps.jobs.submission import JobSubmitter
from serve_apps.jobs.trainer_host import TrainerLauncher
from serve_apps.jobs.usage import usage_summary
from serve_apps.live import LiveChannel
from serve_apps.store import JobsRepository
from serve_apps.store.finetune_files import FinetuneFiles
from serve_apps.store.job_stats import JobStats
from serve_apps.store.storage import JobStore


class JobService:
    def __init__(
        self,
        jobs: JobsRepository,
        store: JobStore,
        encoders: dict,
        denoisers: dict,
        args: AppArgs,
        defaults: dict[str, GenerationDefaults],
        views: JobViews,
        limiter=None,
        adapters: AdapterRegistry | None = None,
        channel: LiveChannel | None = None,
    ):
        """`jobs` holds job state, `store` the files (images), `channel` the live progress and cancels."""
        self.jobs = jobs
        self.store = store
        self.denoisers = denoisers
        self.args = args
        kinds = [GenerateKind(encoders, denoisers, args.pricing, store)]
        self.finetunes = Finetunes(jobs, FinetuneFiles(store), args, "", adapters)
        if args.training.enabled and FINETUNE in jobs.record_types:
            launcher = TrainerLauncher(args.training.worker, args.training.num_gpus, args.training.num_cpus)
            kinds.append(FinetuneKind(self.finetunes.files, launcher, self.finetunes.register, args.training.timeout_s))
        self.core = JobCore(jobs, store, kinds, args, views.webhook_payload, limiter, channel)
        self.replica_id = self.finetunes.replica_id = self.core.replica_id
        self.eta = EtaEstimator(JobStats(jobs.engine), args, self.core.signals.progress)
        self.submitter = JobSubmitter(jobs, defaults, args, limiter, adapters, self.eta)

    # -- reads, off the event loop --------------------------------------------------------

    @property
    def served_models(self) -> list[str]:
        """The models this server runs, by name."""
        return sorted(self.denoisers)

    @property
    def inputs(self):
        """The resolver of input images (fetch, decode, store), for uploads."""
        return self.submitter.inputs

    def quote(self, record: JobRecord) -> float | None:
        """The job's price in BFL credits before it runs (None for a model with no throughput figure)."""
        return quote_credits(record.model, record.params, self.args.pricing)

    async def load(self, job_id: str, key_id: str | None = None) -> JobRecord | None:
        """The record, or None if there is none or it belongs to another key."""
        record = await asyncio.to_thread(self.jobs.load, job_id)
        if record is None or (key_id is not None and record.key_id != key_id):
            return None
        return record

    async def load_progress(self, record: JobRecord) -> Progress | None:
        """The job's latest progress from the live channel (a finished job's, for a while after its end)."""
        return await self.core.signals.progress(record.id)

    async def wait_for_change(self, job_id: str, after: int, timeout_s: float) -> int:
        """The job's live version once above `after` (progress, cancel, its end), or after `timeout_s`."""
        return await self.core.signals.channel.wait_for_change(job_id, after, timeout_s)

    async def load_image(self, job_id: str, name: str) -> bytes | None:
        return await asyncio.to_thread(self.store.load_image, job_id, name)

    async def load_reference(self, name: str) -> bytes | None:
        """A job's input image as stored (what the model was given)."""
        return await asyncio.to_thread(self.store.load_reference, name)

    # -- submit, wait, cancel ---------------------------------------------------------------

    async def submit(
        self, model: str, request: GenerateRequest, key_id: str, base_url: str, idempotency_key: str | None = None
    ) -> JobRecord:
        record, claim = await self.submitter.submit(model, request, key_id, base_url, self.replica_id, idempotency_key)
        if claim is None:
            return record  # the first job of this Idempotency-Key
        self.core.start(record, claim)
        return record

    async def rerun(self, original: JobRecord, base_url: str) -> JobRecord:
        """The job again, as a new job of its key (RerunRefused: why it cannot be); compared once Ready."""
        record, claim = await self.submitter.rerun(original, base_url, self.replica_id, self.store)
        self.core.start(record, claim)
        return record

    async def submit_finetune(
        self, model: str, settings: FinetuneSettings, files: dict[str, bytes], key_id: str, base_url: str
    ) -> FinetuneRecord:
        record, claim = await self.finetunes.submit(model, settings, files, key_id, base_url)
        self.core.start(record, claim)
        return record

    async def wait(self, job_id: str, key_id: str) -> JobRecord:
        """Wait for a job this replica runs (the synchronous OpenAI route) and return its record."""
        await self.core.wait(job_id)
        return await self.load(job_id, key_id)

    async def cancel(self, record: JobRecord) -> JobRecord:
        """Ask a job to stop: a queued one never runs, a running one stops at its next step."""
        return await self.core.cancel(record)

    # -- orphans ----------------------------------------------------------------------------

    async def adopt_if_stale(self, record: JobRecord) -> JobRecord:
        return await self.core.adopt_if_stale(record)

    def start_sweeper(self) -> None:
        self.core.start_sweeper()

    # -- history, usage, queue --------------------------------------------------------------

    async def history(self, key_id: str, limit: int, cursor: str | None) -> tuple[list[JobRecord], str | None]:
        return await asyncio.to_thread(self.jobs.history, key_id, limit, cursor)

    async def usage(self, key_id: str) -> dict:
        return usage_summary(await asyncio.to_thread(self.jobs.usage, key_id), self.args.pricing)

    async def eta_s(self, record: JobRecord, progress: Progress | None) -> float | None:
        """Seconds until the job is Ready, estimated now; None once it has ended."""
        return await self.eta.of_job(record, progress)

    async def queue_position(self, record: JobRecord) -> int | None:
        if not record.is_waiting:
            return None
        return await asyncio.to_thread(self.jobs.jobs_ahead, record)
