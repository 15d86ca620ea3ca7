"""One-shot import of job records and LoRA registrations kept as files by earlier versions.

Earlier versions stored jobs/<id>/job.json and loras/<id>.json in the storage folder; the
database now holds them. Images stay where they are. Running it twice imports nothing twice.
"""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError

from deployments.contracts import AdapterRef, GenerationParams
from serve_apps.jobs.records import JobRecord, JobStatus, Stage
from serve_apps.store import Database
from serve_apps.store.storage import JobStore

LOST_OWNER = "the replica running it stopped before the upgrade"


def record_from_file(stored: dict) -> JobRecord:
    request = dict(stored["request"])
    adapters = tuple(AdapterRef(a["id"], a["source"], a["scale"]) for a in request.pop("loras", []))
    params = GenerationParams(**{**request, "seed": stored.get("seed", request.get("seed", 0))}, adapters=adapters)
    record = JobRecord.model_validate(
        {key: value for key, value in stored.items() if key in JobRecord.model_fields} | {"params": params}
    )
    if record.status == JobStatus.PENDING:  # nobody holds its lease any more
        record.status, record.stage, record.error = JobStatus.ERROR, Stage.DONE, LOST_OWNER
    return record


def import_files(store: JobStore, db: Database) -> dict[str, int]:
    counts = {"jobs": 0, "skipped": 0, "unreadable": 0, "loras": 0}
    for path in store.fs.glob(f"{store.root}/jobs/*/job.json"):
        try:
            record = record_from_file(json.loads(store.fs.cat_file(path)))
        except (ValueError, KeyError, TypeError):
            counts["unreadable"] += 1
            continue
        try:
            db.jobs.create(record)
            counts["jobs"] += 1
        except IntegrityError:
            counts["skipped"] += 1
    for path in store.fs.glob(f"{store.root}/loras/*.json"):
        lora = json.loads(store.fs.cat_file(path))
        if db.adapters.load_lora(lora["id"]) is None:
            db.adapters.save_lora(lora)
            counts["loras"] += 1
    return counts
