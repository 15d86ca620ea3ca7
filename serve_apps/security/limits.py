"""Admission: per key, concurrent jobs, submits per minute and uploads per minute (429); for the whole
service, unfinished jobs (503), so overload is refused at submit instead of queued without bound in front
of the models.

A plain class, deployed as one small replica by the builder, so every ingress sees the same
counts. A job's slot is a lease: if the ingress that took it dies without releasing it, the
slot frees itself after `lease_s`.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from http import HTTPStatus

WINDOW_S = 60.0
RETRY_BUSY_S = 2
RETRY_OVERLOADED_S = 5


class OverLimit(Exception):
    """A refusal to retry later, with what was over: 429 (this key's limit) or 503 (the service's), Retry-After."""

    def __init__(self, reason: str, retry_after_s: int, status_code: int = HTTPStatus.TOO_MANY_REQUESTS):
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.status_code = status_code


class KeyLimiter:
    def __init__(
        self, concurrent_jobs: int, requests_per_minute: int, lease_s: float, max_queued_jobs: int | None = None
    ):
        """`max_queued_jobs`: unfinished jobs of all keys together (None: no service-wide cap)."""
        self.concurrent_jobs = concurrent_jobs
        self.max_queued_jobs = max_queued_jobs
        self.requests_per_minute = requests_per_minute
        self.lease_s = lease_s
        self.requests: dict[str, deque[float]] = defaultdict(deque)
        self.uploads: dict[str, deque[float]] = defaultdict(deque)
        self.active: dict[str, dict[str, float]] = defaultdict(dict)

    @staticmethod
    def deployment_options() -> dict:
        """One replica, so every ingress sees the same counts."""
        return {
            "name": "KeyLimiter",
            "num_replicas": 1,
            "ray_actor_options": {"num_cpus": 0},
            "max_ongoing_requests": 1000,
        }

    def admit(self, key_id: str, job_id: str, now: float | None = None) -> dict | None:
        """Register a submit; None if allowed, else {reason, retry_after_s, status_code}."""
        now = time.time() if now is None else now
        recent = self.requests[key_id]
        if over := over_rate(recent, self.requests_per_minute, now):
            return {**over, "reason": f"more than {self.requests_per_minute} submits in a minute for this key"}
        leases = self.active[key_id]
        for expired in [job for job, expires in leases.items() if expires <= now]:
            del leases[expired]
        if len(leases) >= self.concurrent_jobs:
            return {
                "reason": f"{self.concurrent_jobs} jobs of this key are already running; wait for one to finish",
                "retry_after_s": RETRY_BUSY_S,
                "status_code": HTTPStatus.TOO_MANY_REQUESTS,
            }
        if self.max_queued_jobs is not None and self._unfinished_jobs(now) >= self.max_queued_jobs:
            return {
                "reason": f"the service already holds {self.max_queued_jobs} unfinished jobs (limits.max_queued_jobs)",
                "retry_after_s": RETRY_OVERLOADED_S,
                "status_code": HTTPStatus.SERVICE_UNAVAILABLE,
            }
        recent.append(now)
        leases[job_id] = now + self.lease_s
        return None

    def admit_upload(self, key_id: str, uploads_per_minute: int, now: float | None = None) -> dict | None:
        """Register an upload (POST /v1/uploads, counted apart from submits); None if allowed, else
        {reason, retry_after_s, status_code}. The rate comes with the call, from the ingress's own
        limits.uploads_per_minute_per_key; what a key keeps stored is counted in storage."""
        now = time.time() if now is None else now
        recent = self.uploads[key_id]
        if over := over_rate(recent, uploads_per_minute, now):
            return {
                **over,
                "reason": f"more than {uploads_per_minute} uploads in a minute for this key "
                "(limits.uploads_per_minute_per_key); upload an image once and send its id with every request "
                "that uses it",
            }
        recent.append(now)
        return None

    def release(self, key_id: str, job_id: str) -> None:
        self.active[key_id].pop(job_id, None)

    def _unfinished_jobs(self, now: float) -> int:
        """Leases of every key, expired ones dropped (at most max_queued_jobs of them: cheap per submit)."""
        for leases in self.active.values():
            for expired in [job for job, expires in leases.items() if expires <= now]:
                del leases[expired]
        return sum(len(leases) for leases in self.active.values())


def over_rate(recent: deque[float], per_minute: int, now: float) -> dict | None:
    """Drop times older than the window from `recent`; {retry_after_s, status_code} if `per_minute` remain."""
    while recent and recent[0] <= now - WINDOW_S:
        recent.popleft()
    if len(recent) < per_minute:
        return None
    return {"retry_after_s": max(1, int(recent[0] + WINDOW_S - now) + 1), "status_code": HTTPStatus.TOO_MANY_REQUESTS}
