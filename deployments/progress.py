"""The step hook's contract: what a loop (denoising or training) reports at each step, and how it learns to stop.

Torch-free, so the ingress, the workers and the trainers share one typed `Progress` and one
`StepObserver` port; where progress travels (a live channel, the database) is the observer's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Progress:
    """One job's place in its loop: `step` of `of` done, an ETA when one can be given, and a small
    preview image (PNG or JPEG bytes) when the loop makes one."""

    job_id: str
    step: int
    of: int
    eta_s: float | None = None
    preview: bytes | None = None
    updated_at: float = 0.0

    def to_json(self) -> dict:
        """As progress appears in `GET /v1/jobs/{id}` and events (the preview travels apart, by URL)."""
        return {"step": self.step, "total": self.of, "eta_s": self.eta_s, "updated_at": self.updated_at}


class StepObserver(Protocol):
    """What a loop calls once per step: it publishes progress and answers whether the job should stop."""

    def on_step(self, progress: Progress) -> None: ...

    def cancel_requested(self, job_id: str) -> bool: ...


class Cancelled(Exception):
    """Raised inside a loop at a step where every job it runs was asked to stop."""
