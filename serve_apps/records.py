"""The job record: what storage keeps of one job, typed, from submit to its final status."""

from __future__ import annotations

import time
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from deployments.contracts import GenerationParams


class JobStatus(str, Enum):
    """BFL's statuses, plus Cancelled (which get_result reports as Error for BFL clients)."""

    PENDING = "Pending"
    READY = "Ready"
    ERROR = "Error"
    REQUEST_MODERATED = "Request Moderated"
    CONTENT_MODERATED = "Content Moderated"
    CANCELLED = "Cancelled"
    NOT_FOUND = "Task not found"


FINAL_STATUSES = frozenset({JobStatus.READY, JobStatus.ERROR, JobStatus.CANCELLED, JobStatus.REQUEST_MODERATED})


class Stage(str, Enum):
    QUEUED = "queued"
    ENCODING = "encoding"
    DENOISING = "denoising"
    DONE = "done"


class WebhookDelivery(BaseModel):
    attempt: int
    at: float
    delivered: bool
    status_code: int | None = None
    error: str | None = None


class Webhook(BaseModel):
    url: str
    secret: str | None = None
    deliveries: list[WebhookDelivery] = []


class Usage(BaseModel):
    gpu_seconds: float
    cost_usd: float
    gpu_type: str


class JobRecord(BaseModel):
    """One job. `params` is everything that decides its images; the rest is its life so far."""

    model_config = ConfigDict(validate_assignment=True)

    id: str
    model: str
    key_id: str
    base_url: str = ""
    params: GenerationParams
    status: JobStatus = JobStatus.PENDING
    stage: Stage = Stage.QUEUED
    attempts: int = 0
    owner: str = ""
    heartbeat_at: float = Field(default_factory=time.time)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    images: list[str] = []
    timings_s: dict[str, float] = {}
    batch: dict[str, int | str] = {}
    error: str | None = None
    warnings: list[str] = []
    usage: Usage | None = None
    webhook: Webhook | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_waiting(self) -> bool:
        """Pending and not yet denoising: what a queue position counts."""
        return self.status == JobStatus.PENDING and self.stage != Stage.DENOISING
