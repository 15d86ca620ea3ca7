"""Job records: what the database keeps of one job, typed, from submit to its final status.

`JobState` is what the job core reads and writes for every kind (lease, attempts, status, webhook);
each kind's record adds its typed `params` and its result (`JobRecord`: generation's).
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.contracts import GenerationParams
from deployments.manifest import Manifest


class JobStatus(str, Enum):
    """BFL's statuses, plus Cancelled (which get_result reports as Error for BFL clients)."""

    PENDING = "Pending"
    READY = "Ready"
    ERROR = "Error"
    REQUEST_MODERATED = "Request Moderated"
    CONTENT_MODERATED = "Content Moderated"
    CANCELLED = "Cancelled"
    NOT_FOUND = "Task not found"


FINAL_STATUSES = frozenset(set(JobStatus) - {JobStatus.PENDING, JobStatus.NOT_FOUND})  # every status a job ends in


class Stage(str, Enum):
    """The core knows QUEUED (not started: cancel ends it at once) and DONE; a kind marks its own
    steps between them (generation: ENCODING, DENOISING; a kind without steps: RUNNING)."""

    QUEUED = "queued"
    RUNNING = "running"
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


GENERATE = "generate"


class RerunCheck(BaseModel):
    """A rerun's comparison with the job it reran, made once the rerun is Ready (serve_apps/jobs/reruns.py)."""

    of: str
    original_images: list[str]
    identical: bool | None = None  # every file equal to the original's, byte for byte
    max_pixel_difference: int | None = None  # the largest absolute difference of a channel value, 0..255
    note: str | None = None  # why there is no verdict, or what differs besides pixels
    original_pass_requests: int = 1  # requests in the original's largest pass: over 1, it was batched with others


class JobState(BaseModel):
    """What the job core keeps of every job, whatever its kind. A kind's record subclasses it with
    `kind` fixed to its name, its typed `params`, and the fields of its result."""

    model_config = ConfigDict(validate_assignment=True)

    id: str
    kind: str
    model: str
    key_id: str
    base_url: str = ""
    params: BaseModel
    status: JobStatus = JobStatus.PENDING
    stage: Stage = Stage.QUEUED
    attempts: int = 0
    owner: str = ""
    heartbeat_at: float = Field(default_factory=time.time)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    timings_s: dict[str, float] = {}
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

    def input_names(self) -> set[str]:
        """The stored input images (refs/) the job runs from, kept until no job names them."""
        return set()

    def output_count(self) -> int:
        """How many outputs it made (the `images` column, summed by usage)."""
        return 0


class JobRecord(JobState):
    """A generation job. `params` is everything that decides its images; the rest is its life so far."""

    kind: Literal["generate"] = GENERATE
    params: GenerationParams
    images: list[str] = []
    batch: dict[str, int | str] = {}
    manifest: Manifest | None = None  # what made its images, as the worker wrote it into each file
    cache: dict[str, str] = {}  # what came prepared from the replica's caches: {"references": "hit"|"miss"}
    rerun: RerunCheck | None = None  # a rerun's: the job it reran and how its images compare
    deadline_s: float | None = None  # seconds from created_at its caller would wait; still queued then, it is cancelled
    submit_eta_s: float | None = None  # the ETA its submit answered

    def input_names(self) -> set[str]:
        params = self.params
        return {image.name for image in [*params.references, params.mask] if image is not None}

    def output_count(self) -> int:
        return len(self.images)
