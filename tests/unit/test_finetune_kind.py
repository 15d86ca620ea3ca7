"""The finetune job kind under the job core, with a scripted trainer in place of the Ray actor (no Ray,
no torch): samples and checkpoints stored as they come, a second attempt resumes from the last
checkpoint's step, the adapter stored and registered on Ready, a cancel stops the trainer."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from deployments.finetune import FinetuneEvent, FinetuneExample, FinetuneParams
from serve_apps.config import AppArgs
from serve_apps.jobs.core import JobCore
from serve_apps.jobs.finetune_records import FINETUNE, FinetuneRecord
from serve_apps.jobs.kinds.finetune import FinetuneKind
from serve_apps.jobs.records import GENERATE, JobRecord, JobStatus
from serve_apps.store import Database
from serve_apps.store.finetune_files import FinetuneFiles
from serve_apps.store.storage import JobStore, new_job_id
from tests.unit.test_job_core import Releases, until

STEPS = 6


class ScriptedTrainer:
    """Yields a step event per step, a sample every 2 steps, a checkpoint every 3, then the adapter; its
    first attempt dies after `die_after` steps. Records what each attempt was asked to resume from."""

    def __init__(self, die_after: int | None = None, step_s: float = 0.01):
        self.die_after = die_after
        self.step_s = step_s
        self.resumed_from: list[bytes | None] = []
        self.stopped = False

    @asynccontextmanager
    async def session(self):
        yield self

    async def events(self, params: FinetuneParams, examples: list[FinetuneExample], resume: bytes | None):
        assert [example.caption for example in examples] == ["a red TOK"]
        self.resumed_from.append(resume)
        first = int(resume.decode()) + 1 if resume else 1
        for step in range(first, STEPS + 1):
            if self.stopped:
                return
            if self.die_after is not None and len(self.resumed_from) == 1 and step > self.die_after:
                raise RuntimeError("the trainer's node died")
            await asyncio.sleep(self.step_s)
            yield FinetuneEvent(
                step,
                STEPS,
                loss=1.0 / step,
                sample_png=b"png" if step % 2 == 0 else None,
                checkpoint=str(step).encode() if step % 3 == 0 else None,
            )
        yield FinetuneEvent(STEPS, STEPS, adapter=b"safetensors", default_strength=1.25, details={"rank": 32})

    async def stop(self) -> None:
        self.stopped = True


def finetune_replica(database_url: str, tmp_path, trainer: ScriptedTrainer):
    args = AppArgs(storage_url=str(tmp_path), jobs={"heartbeat_s": 0.05, "stale_after_s": 5, "max_attempts": 3})
    store = JobStore(str(tmp_path / "store"))
    files = FinetuneFiles(store)
    registered: list[FinetuneRecord] = []
    kind = FinetuneKind(files, trainer, registered.append, timeout_s=60)
    jobs = Database.open(database_url, {GENERATE: JobRecord, FINETUNE: FinetuneRecord}).jobs
    core = JobCore(jobs, store, [kind], args, dict, Releases(), None, replica_id="a")
    return core, files, registered


def submit(core: JobCore, files: FinetuneFiles) -> FinetuneRecord:
    finetune_id = new_job_id()
    params = FinetuneParams(
        finetune_id, "flux-2-klein-4b", "flux-2-klein-4b", "emulated", "style", "TOK", STEPS, 1e-3, 16
    )
    files.save_examples(finetune_id, [FinetuneExample("a", b"png-bytes", "a red TOK")])
    record = FinetuneRecord(
        id=finetune_id, model="flux-2-klein-4b", key_id="0123456789ab", owner="a", params=params, comment="c", images=1
    )
    stored, claim = core.jobs.create(record)
    core.start(stored, claim)
    return stored


def test_a_finetune_stores_samples_and_checkpoints_and_registers_its_adapter(database_url, tmp_path):
    trainer = ScriptedTrainer()
    core, files, registered = finetune_replica(database_url, tmp_path, trainer)

    async def scenario():
        record = submit(core, files)
        await core.wait(record.id)
        return record

    record = asyncio.run(scenario())
    stored = core.jobs.load(record.id)
    assert stored.status == JobStatus.READY, stored.error
    assert (
        stored.samples == ["00002.png", "00004.png", "00006.png"]
        and files.load_sample(record.id, "00004.png") == b"png"
    )
    assert stored.checkpoint_step == 6 and files.load_checkpoint(record.id) == b"6"
    assert stored.default_strength == 1.25 and stored.details == {"rank": 32}
    assert [r.id for r in registered] == [record.id] and registered[0].adapter_source.endswith("/adapter")
    assert (
        tmp_path / "store" / "finetunes" / record.id / "adapter" / "pytorch_lora_weights.safetensors"
    ).read_bytes() == b"safetensors"
    files.delete(record.id)
    assert not (tmp_path / "store" / "finetunes" / record.id).exists()


def test_a_trainer_that_dies_is_retried_from_its_last_checkpoint_not_from_zero(database_url, tmp_path):
    trainer = ScriptedTrainer(die_after=4)
    core, files, _ = finetune_replica(database_url, tmp_path, trainer)

    async def scenario():
        record = submit(core, files)
        await core.wait(record.id)
        return record

    record = asyncio.run(scenario())
    stored = core.jobs.load(record.id)
    assert stored.status == JobStatus.READY and stored.attempts == 2
    assert trainer.resumed_from == [None, b"3"], "the second attempt starts after step 3, the last checkpoint"


def test_a_cancel_stops_the_trainer_at_its_next_step(database_url, tmp_path):
    trainer = ScriptedTrainer(step_s=0.2)
    core, files, registered = finetune_replica(database_url, tmp_path, trainer)

    async def scenario():
        record = submit(core, files)
        await until(lambda: core.signals.progress(record.id))
        await core.cancel(core.jobs.load(record.id))
        await core.wait(record.id)
        return record

    record = asyncio.run(scenario())
    stored = core.jobs.load(record.id)
    assert stored.status == JobStatus.CANCELLED and trainer.stopped and registered == []
