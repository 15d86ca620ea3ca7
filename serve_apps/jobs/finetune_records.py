"""The finetune kind's record: its params (decided at submit), what its training made so far, and its end."""

from __future__ import annotations

from typing import Literal

from deployments.finetune import FinetuneParams
from serve_apps.jobs.records import JobState

FINETUNE = "finetune"


class FinetuneRecord(JobState):
    kind: Literal["finetune"] = FINETUNE
    params: FinetuneParams
    comment: str
    images: int
    captions_written: int = 0
    samples: list[str] = []  # stored sample names, oldest first
    checkpoint_step: int = 0  # the step the stored checkpoint resumes from
    default_strength: float | None = None
    adapter_source: str | None = None  # where the LoRA path loads it from (never shown to callers)
    details: dict = {}

    def output_count(self) -> int:
        return 1 if self.adapter_source else 0
