"""What a job is doing right now, from either the events stream or a poll, in one shape for progress callbacks."""

from __future__ import annotations

from dataclasses import dataclass

PENDING = "Pending"
READY = "Ready"


@dataclass(frozen=True)
class JobUpdate:
    job_id: str
    status: str = PENDING
    stage: str = "queued"
    step: int | None = None
    total: int | None = None
    queue_position: int | None = None

    @classmethod
    def from_job(cls, job: dict) -> JobUpdate:
        """From the job JSON of GET /v1/jobs/{id}."""
        progress = job.get("progress") or {}
        return cls(
            job_id=job["id"],
            status=job["status"],
            stage=job.get("stage", "queued"),
            step=progress.get("step"),
            total=progress.get("total"),
            queue_position=job.get("queue_position"),
        )

    @property
    def finished(self) -> bool:
        return self.status != PENDING

    def describe(self) -> str:
        """A short human line: 'queued, position 2', 'step 5/16', 'done'."""
        if self.finished:
            return "done" if self.status == READY else self.status
        if self.step is not None and self.total:
            return f"step {self.step}/{self.total}"
        if self.stage == "queued":
            return f"queued, position {self.queue_position + 1}" if self.queue_position else "queued"
        return self.stage
