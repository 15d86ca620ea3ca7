"""What a job is doing right now, from either the events stream or a poll, in one shape for progress callbacks."""

from __future__ import annotations

import base64
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
    preview: dict | None = None  # {step, image: a data:image/jpeg;base64 URL} of the image as it forms

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
            preview=job.get("preview"),
        )

    def preview_image(self) -> tuple[int, bytes] | None:
        """(step, image bytes) of the preview this update carries, or None."""
        image = self.preview.get("image") if isinstance(self.preview, dict) else None
        if not isinstance(image, str) or "," not in image:
            return None
        try:
            return int(self.preview["step"]), base64.b64decode(image.split(",", 1)[1], validate=True)
        except (KeyError, TypeError, ValueError):
            return None

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
