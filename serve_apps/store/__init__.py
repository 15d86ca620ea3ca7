"""The database, one repository per aggregate (jobs, API keys, LoRA adapters) over one shared engine.

Job state lives here, images and reference files in fsspec storage. Tables change only through a
migration in serve_apps/migrations/versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine

from serve_apps.jobs.records import JobState
from serve_apps.store.adapters import AdaptersRepository
from serve_apps.store.engine import default_database_url, make_engine, open_engine
from serve_apps.store.jobs import Claim, IdempotencyConflict, JobsRepository, LeaseLost, request_digest
from serve_apps.store.keys import KeysRepository


@dataclass(frozen=True)
class Database:
    """The three repositories on one engine, migrated once when opened."""

    engine: Engine
    jobs: JobsRepository
    keys: KeysRepository
    adapters: AdaptersRepository

    @classmethod
    def open(cls, url: str, record_types: Mapping[str, type[JobState]] | None = None) -> Database:
        """`record_types`: the job kinds this process runs, by name (default: every kind)."""
        engine = open_engine(url)
        return cls(engine, JobsRepository(engine, record_types), KeysRepository(engine), AdaptersRepository(engine))


__all__ = [
    "AdaptersRepository",
    "Claim",
    "Database",
    "IdempotencyConflict",
    "JobsRepository",
    "KeysRepository",
    "LeaseLost",
    "default_database_url",
    "make_engine",
    "request_digest",
]
