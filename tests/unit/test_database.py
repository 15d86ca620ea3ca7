"""Job state under concurrency, on SQLite and on PostgreSQL: each finding of issue 14, reproduced."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import update

from deployments.contracts import GenerationParams
from serve_apps.jobs.records import JobRecord, JobStatus, Stage
from serve_apps.store import Database, IdempotencyConflict, JobsRepository, LeaseLost
from serve_apps.store.schema import jobs
from serve_apps.store.storage import new_job_id

KEY_ID = "0123456789ab"
OTHER_KEY = "ffffffffffff"


def record(model: str = "m", created_at: float | None = None, key_id: str = KEY_ID, **fields) -> JobRecord:
    params = fields.pop("params", None) or GenerationParams(
        prompt="p", width=64, height=64, steps=4, guidance=None, seed=1
    )
    when = time.time() if created_at is None else created_at
    return JobRecord(id=new_job_id(), model=model, key_id=key_id, params=params, created_at=when, **fields)


def beat_long_ago(db: JobsRepository, job_id: str) -> None:
    """Heartbeats are stamped by the database's clock: an old one is written in SQL."""
    with db.engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == job_id).values(heartbeat_at=jobs.c.heartbeat_at - 100))


@pytest.fixture
def database(database_url) -> Database:
    return Database.open(database_url)


@pytest.fixture
def db(database) -> JobsRepository:
    return database.jobs


def test_a_heartbeat_after_the_final_write_changes_nothing(db):
    job, claim = db.create(record())
    job.status, job.stage, job.images = JobStatus.READY, Stage.DONE, ["0.png"]
    db.save(claim, job)
    with pytest.raises(LeaseLost):
        db.heartbeat(claim)
    stored = db.load(job.id)
    assert stored.status == JobStatus.READY and stored.images == ["0.png"]


def test_two_replicas_adopting_one_stale_job_one_wins(db):
    job, _claim = db.create(record())
    beat_long_ago(db, job.id)
    [(_, token)] = db.stale_jobs(30, job.id)
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda owner: db.adopt(job.id, token, owner, 30), [f"r{i}" for i in range(8)]))
    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    assert db.load(job.id).owner in {f"r{i}" for i in range(8)}


def test_the_old_owner_cannot_write_after_adoption(db):
    job, old = db.create(record())
    beat_long_ago(db, job.id)
    new = db.adopt(job.id, old.token, "new-owner", 30)
    job.status, job.stage = JobStatus.READY, Stage.DONE
    with pytest.raises(LeaseLost):
        db.save(old, job)
    with pytest.raises(LeaseLost):
        db.heartbeat(old)
    db.heartbeat(new)
    assert db.load(job.id).status == JobStatus.PENDING


def test_concurrent_submits_with_one_idempotency_key_make_one_job(db):
    def submit(_):
        stored, claim = db.create(record(), "order-42", "body-digest")
        return stored.id, claim is not None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(8)))
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(took_claim for _, took_claim in results) == 1
    with pytest.raises(IdempotencyConflict, match="different request body"):
        db.create(record(), "order-42", "another-body")
    other_key, claim = db.create(record(key_id=OTHER_KEY), "order-42", "body-digest")
    assert claim is not None, "idempotency keys are per API key"


def test_an_unreadable_record_is_quarantined_and_the_sweep_goes_on(db):
    broken, _ = db.create(record())
    fine, _ = db.create(record())
    beat_long_ago(db, broken.id)
    beat_long_ago(db, fine.id)
    with db.engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == broken.id).values(record="{not json"))
    assert db.quarantine_unreadable() == [broken.id]
    assert [job_id for job_id, _ in db.stale_jobs(30)] == [fine.id]


def test_a_queued_job_is_cancelled_once_and_its_owner_loses_the_lease(db):
    job, claim = db.create(record())
    cancelled = db.cancel_if_queued(job.id, "cancelled by the user")
    assert cancelled.status == JobStatus.CANCELLED
    assert db.cancel_if_queued(job.id, "again") is None
    with pytest.raises(LeaseLost):
        db.save(claim, job)
    assert db.load(job.id).status == JobStatus.CANCELLED


def test_history_pages_newest_first_and_stays_private(db):
    made = [db.create(record(created_at=1000.0 + offset))[0].id for offset in range(5)]
    first, cursor = db.history(KEY_ID, limit=2)
    second, cursor2 = db.history(KEY_ID, limit=2, cursor=cursor)
    third, cursor3 = db.history(KEY_ID, limit=2, cursor=cursor2)
    assert [r.id for r in first + second + third] == made[::-1]
    assert cursor3 is None
    assert db.history(OTHER_KEY, limit=2) == ([], None)


def test_queue_position_and_usage_are_queries(db):
    running, claim = db.create(record("a", 1.0))
    running.stage = Stage.DENOISING
    db.save(claim, running)
    earlier, _ = db.create(record("a", 2.0))
    db.create(record("b", 3.0))
    mine, _ = db.create(record("a", 4.0))
    assert db.jobs_ahead(mine) == 1 and db.jobs_ahead(earlier) == 0
    from serve_apps.jobs.records import Usage

    running.status, running.stage, running.images = JobStatus.READY, Stage.DONE, ["0.png", "1.png"]
    running.usage = Usage(gpu_seconds=2.0, cost_usd=0.5, gpu_type="h100")
    db.save(claim, running)
    assert db.usage(KEY_ID) == {"a": {"jobs": 1, "images": 2, "gpu_seconds": 2.0, "cost_usd": 0.5}}
    assert db.usage(OTHER_KEY) == {}


def test_loras_are_kept_with_their_owner(database):
    adapters = database.adapters
    adapters.save_lora({"id": "red", "owner_key_id": KEY_ID, "source": "/x"})
    adapters.save_lora({"id": "red", "owner_key_id": KEY_ID, "source": "/y"})
    assert adapters.load_lora("red")["source"] == "/y" and [r["id"] for r in adapters.list_loras()] == ["red"]
    assert adapters.load_lora("blue") is None


def test_two_databases_on_one_file_migrate_once(database_url):
    Database.open(database_url)
    again = Database.open(database_url)
    assert again.jobs.count_pending() == 0


def test_file_records_of_earlier_versions_are_imported_once(tmp_path):
    import json

    from serve_apps.store.legacy_import import import_files
    from serve_apps.store.storage import JobStore

    store = JobStore(str(tmp_path / "store"))
    done, orphan = new_job_id(), new_job_id()
    request = {
        "prompt": "p",
        "loras": [{"id": "red", "source": "/l", "scale": 0.5}],
        "width": 64,
        "height": 64,
        "steps": 4,
        "guidance": None,
        "num_images": 1,
        "output_format": "png",
        "seed": 3,
    }
    for job_id, status in ((done, "Ready"), (orphan, "Pending")):
        stored = {
            "id": job_id,
            "model": "m",
            "key_id": KEY_ID,
            "status": status,
            "stage": "done",
            "request": request,
            "seed": 3,
            "attempts": 1,
            "owner": "x",
            "heartbeat_at": 1.0,
            "created_at": 1.0,
            "updated_at": 1.0,
            "images": ["0.png"],
            "timings_s": {},
            "batch": {},
            "error": None,
            "webhook": None,
            "warnings": [],
        }
        store.fs.makedirs(f"{store.root}/jobs/{job_id}", exist_ok=True)
        store.fs.pipe_file(f"{store.root}/jobs/{job_id}/job.json", json.dumps(stored).encode())
    broken = new_job_id()
    store.fs.makedirs(f"{store.root}/jobs/{broken}", exist_ok=True)
    store.fs.pipe_file(f"{store.root}/jobs/{broken}/job.json", b"{broken")
    store.fs.makedirs(f"{store.root}/loras", exist_ok=True)
    store.fs.pipe_file(f"{store.root}/loras/red.json", json.dumps({"id": "red", "source": "/l"}).encode())
    database = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert import_files(store, database) == {"jobs": 2, "skipped": 0, "unreadable": 1, "loras": 1}
    assert import_files(store, database) == {"jobs": 0, "skipped": 2, "unreadable": 1, "loras": 0}
    db = database.jobs
    assert db.load(done).params.adapters[0].scale == 0.5 and db.load(done).status == JobStatus.READY
    assert db.load(orphan).status == JobStatus.ERROR, "no replica holds a lease on an imported Pending job"


def test_retention_deletes_old_finished_jobs_with_their_images(tmp_path):
    from serve_apps.jobs.retention import apply_retention, expired
    from serve_apps.store.storage import JobStore

    db = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}").jobs
    store = JobStore(str(tmp_path / "store"))
    old, claim = db.create(record())
    old.status, old.stage = JobStatus.READY, Stage.DONE
    db.save(claim, old)
    running, _ = db.create(record())
    store.save_image(old.id, "0.png", b"png")
    upload = ("0123456789ab", "upload_" + "a" * 32)
    store.save_upload(*upload, b"png")
    later = time.time() + 31 * 86_400
    assert expired(db, 30, now=later) == [old.id], "a dry run lists, deletes nothing; Pending jobs are kept"
    assert db.load(old.id) is not None
    assert apply_retention(db, store, 30, now=later) == 1
    assert db.load(old.id) is None and store.load_image(old.id, "0.png") is None
    assert db.load(running.id) is not None
    assert store.load_upload(*upload) is None, "old uploads go too (a job keeps its own copy in refs/)"
    store.save_upload(*upload, b"png")
    assert apply_retention(db, store, 30) == 0, "nothing younger than the retention goes"
    assert store.load_upload(*upload) == b"png"


def stored_reference(store=None):
    """A reference with a random name, stored when a store is given (as a submit stores it)."""
    from deployments.contracts import ReferenceImage

    sha256 = secrets.token_hex(32)
    if store is not None:
        store.save_reference(f"{sha256}.png", b"png")
    return ReferenceImage(sha256=sha256, name=f"{sha256}.png", width=64, height=64)


def with_references(*references, mask=None) -> JobRecord:
    params = GenerationParams(
        prompt="p", width=64, height=64, steps=4, guidance=None, seed=1, references=references, mask=mask
    )
    return record(params=params)


def test_retention_deletes_the_input_images_no_remaining_job_names(db, tmp_path):
    from serve_apps.jobs.retention import apply_retention
    from serve_apps.store.storage import JobStore

    store = JobStore(str(tmp_path / "store"))
    shared, expired_only, mask, refused = (stored_reference(store) for _ in range(4))
    old, claim = db.create(with_references(shared, expired_only, mask=mask))
    old.status, old.stage = JobStatus.READY, Stage.DONE
    db.save(claim, old)
    db.create(with_references(shared))  # still Pending: names `shared`
    later = time.time() + 31 * 86_400
    assert apply_retention(db, store, 30, now=later) == 1
    assert store.load_reference(shared.name) == b"png", "a remaining job names it: its retry needs it"
    assert store.load_reference(expired_only.name) is None and store.load_reference(mask.name) is None
    assert store.load_reference(refused.name) is None, "stored by a submit that made no job (e.g. a 429)"
    fresh = stored_reference(store)
    apply_retention(db, store, 30)
    assert store.load_reference(fresh.name) == b"png", "an hour's grace for a submit still in flight"


def test_a_reference_sent_again_is_written_only_when_it_is_older_than_the_refresh(tmp_path):
    """One image sent with hundreds of jobs is not rewritten each time, yet never ages past the grace."""
    import os

    from serve_apps.store.storage import REFERENCE_REFRESH_S, JobStore

    store = JobStore(str(tmp_path / "store"))
    reference = stored_reference(store)
    path = tmp_path / "store" / "refs" / reference.name
    recent = time.time() - REFERENCE_REFRESH_S / 2
    os.utime(path, (recent, recent))
    store.save_reference(reference.name, b"png")
    assert abs(path.stat().st_mtime - recent) < 1, "fresh enough: not written again"
    stale = time.time() - REFERENCE_REFRESH_S - 60
    os.utime(path, (stale, stale))
    store.save_reference(reference.name, b"png")
    assert path.stat().st_mtime > time.time() - 60, "older than the refresh: written again"


def test_the_migration_finds_the_input_images_of_jobs_stored_before_it(database_url):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import insert

    from serve_apps.migrations import HERE
    from serve_apps.store import make_engine

    engine = make_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(HERE))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    reference, mask = stored_reference(), stored_reference()
    job = with_references(reference, mask=mask)
    with engine.begin() as connection:
        connection.execute(
            insert(jobs).values(
                id=job.id,
                key_id=job.key_id,
                model=job.model,
                created_at=job.created_at,
                lease_token=1,
                **JobsRepository._columns(job),
            )
        )
    db = Database.open(database_url).jobs
    assert db.inputs_in_use([reference.name, mask.name, stored_reference().name]) == {reference.name, mask.name}


def test_a_key_revoked_in_the_database_is_refused_by_every_replica_at_once(database):
    from serve_apps.security.auth import ADMIN, USER, ApiKeys, hash_key

    db = database.keys
    replica_a, replica_b = ApiKeys(set(), None, db), ApiKeys({hash_key("operator")}, None, db)
    db.add_key(hash_key("alice-key"), "alice", USER)
    db.add_key(hash_key("root-key"), "root", ADMIN)
    assert replica_a.identify("alice-key") == replica_b.identify("alice-key") is not None
    assert replica_a.role("root-key") == ADMIN and replica_b.role("operator") == ADMIN
    assert db.revoke_key("alice") == 1
    assert replica_a.identify("alice-key") is None and replica_b.identify("alice-key") is None
    assert replica_a.identify("wrong") is None


def test_a_lora_id_another_key_registered_first_is_refused_not_taken_over(database):
    from lora.registry import AdapterError

    adapters = database.adapters
    adapters.save_lora({"id": "style", "owner_key_id": KEY_ID, "source": "mine"})
    with pytest.raises(AdapterError, match="registered by another API key"):
        adapters.save_lora({"id": "style", "owner_key_id": OTHER_KEY, "source": "theirs"})
    assert adapters.load_lora("style")["source"] == "mine"
    adapters.save_lora({"id": "style", "owner_key_id": KEY_ID, "source": "mine, v2"})
    assert adapters.load_lora("style")["source"] == "mine, v2", "the owner still updates it"
