"""The "finetune" kind: stored training data -> a trainer actor (its own GPU share) -> an adapter file in
storage -> a LoRA registration owned by the finetune's key, served through the usual LoRA path.

Each event of the trainer becomes progress (the sample images as previews); samples and checkpoints
are stored as they come, so an attempt after a crash (or an adoption by another replica) resumes at
the last checkpoint's step, not at zero. A cancel stops the trainer at its next step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from deployments.finetune import FinetuneEvent
from serve_apps.jobs.finetune_records import FINETUNE, FinetuneRecord
from serve_apps.jobs.kind import JobCancelled, JobContext, JobEnds
from serve_apps.jobs.records import JobStatus, Stage
from serve_apps.jobs.trainer_host import TrainerLauncher
from serve_apps.store import Claim
from serve_apps.store.finetune_files import FinetuneFiles

logger = logging.getLogger("flux_serve.finetune")


class FinetuneKind:
    name = FINETUNE
    record_type = FinetuneRecord

    def __init__(
        self,
        files: FinetuneFiles,
        launcher: TrainerLauncher,
        register: Callable[[FinetuneRecord], dict],
        timeout_s: float,
    ):
        """`register(record)` registers the finished adapter as a LoRA of the record's key (AdapterError if
        it fits no served model)."""
        self.files = files
        self.launcher = launcher
        self.register = register
        self.timeout_s = timeout_s

    async def run(self, record: FinetuneRecord, claim: Claim, context: JobContext) -> None:
        await context.check_cancel()
        examples = await asyncio.to_thread(self.files.load_examples, record.id)
        resume = await asyncio.to_thread(self.files.load_checkpoint, record.id)
        if resume is None:
            record.checkpoint_step = 0
        record.stage = Stage.RUNNING
        await context.save(record)
        started, first_step = time.monotonic(), record.checkpoint_step
        async with self.launcher.session() as trainer:
            try:
                async for event in trainer.events(record.params, examples, resume):
                    if await context.cancel_requested():
                        await trainer.stop()
                        raise JobCancelled()
                    await self.take(record, event, context)
                    eta_s = eta(event, first_step, time.monotonic() - started)
                    await context.report_progress(event.step, event.of, eta_s, event.sample_png)
            except Exception as error:
                if type(getattr(error, "cause", error)).__name__ == "FinetuneStopped":
                    raise JobCancelled() from None
                raise
        if not record.adapter_source:
            raise RuntimeError("the trainer ended without an adapter")

    async def take(self, record: FinetuneRecord, event: FinetuneEvent, context: JobContext) -> None:
        """Store what the event carries and save the record when it changed."""
        changed = False
        if event.sample_png is not None:
            name = await asyncio.to_thread(self.files.save_sample, record.id, event.step, event.sample_png)
            record.samples = [*record.samples, name]
            changed = True
        if event.checkpoint is not None:
            await asyncio.to_thread(self.files.save_checkpoint, record.id, event.checkpoint)
            record.checkpoint_step = event.step
            changed = True
        if event.final:
            record.adapter_source = await asyncio.to_thread(self.files.save_adapter, record.id, event.adapter)
            record.default_strength = event.default_strength
            record.details = event.details or {}
            try:
                await asyncio.to_thread(self.register, record)
            except ValueError as refused:  # AdapterError: nothing served takes it
                raise JobEnds(JobStatus.ERROR, f"the trained adapter cannot be served: {refused}") from None
            changed = True
        if changed:
            await context.save(record)


def eta(event: FinetuneEvent, first_step: int, elapsed_s: float) -> float | None:
    """Seconds left at this attempt's pace so far."""
    done = event.step - first_step
    return None if done <= 0 else (event.of - event.step) * elapsed_s / done
