"""The job database and the storage folder are the service user's alone, and webhook secrets are sealed
in the database (issue 25 item 9, no Ray): they hold every prompt, image and webhook secret."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat

import pytest
from sqlalchemy import select

from deployments.contracts import GenerationParams
from serve_apps.jobs.records import JobRecord, Webhook
from serve_apps.store import Database, JobsRepository, default_database_url
from serve_apps.store.schema import jobs
from serve_apps.store.secret_box import SecretBox, load_webhook_secret_box
from serve_apps.store.storage import JobStore, new_job_id
from serve_apps.store.webhooks import WebhookDeliveries


@pytest.fixture(autouse=True)
def usual_umask():
    """The umask most services run under: what is not made private explicitly is world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def job(secret: str | None = "receiver-secret") -> JobRecord:
    params = GenerationParams(prompt="a private prompt", width=64, height=64, steps=4, guidance=None, seed=1)
    webhook = Webhook(url="https://example.com/hook", secret=secret)
    return JobRecord(id=new_job_id(), model="m", key_id="0123456789ab", params=params, webhook=webhook)


def test_the_sqlite_file_and_its_wal_and_shm_are_0600(tmp_path):
    path = tmp_path / "jobs.db"
    database = Database.open(f"sqlite:///{path}")
    database.jobs.create(job())
    with database.engine.connect() as connection:  # a second connection while the first is pooled
        connection.execute(select(jobs.c.id)).all()
    assert mode(path) == 0o600
    companions = [f"{path}-wal", f"{path}-shm"]
    assert all(os.path.exists(companion) for companion in companions), "WAL mode keeps both beside the file"
    assert [mode(companion) for companion in companions] == [0o600, 0o600]


def test_a_database_made_world_readable_by_an_older_version_is_narrowed_when_opened(tmp_path):
    """An older version's process still has the database open: its file, -wal and -shm are 0644 and
    not empty (SQLite itself narrows only an empty one it opens)."""
    path = tmp_path / "jobs.db"
    older = sqlite3.connect(path)
    older.execute("PRAGMA journal_mode=WAL")
    older.execute("CREATE TABLE prompts (text)")
    older.execute("INSERT INTO prompts VALUES ('a private prompt')")
    older.commit()
    files = (path, f"{path}-wal", f"{path}-shm")
    assert [mode(file) for file in files] == [0o644] * 3 and os.path.getsize(files[1]) > 0
    try:
        database = Database.open(f"sqlite:///{path}")
        assert database.jobs.count_pending() == 0
        assert [mode(file) for file in files] == [0o600] * 3
    finally:
        older.close()


def test_the_default_database_folder_is_0700_made_new_or_found_open(tmp_path):
    new_folder = tmp_path / "new" / "store"
    default_database_url(str(new_folder))
    assert mode(new_folder) == 0o700
    old_folder = tmp_path / "old"
    old_folder.mkdir(mode=0o755)
    url = default_database_url(str(old_folder))
    assert mode(old_folder) == 0o700
    Database.open(url)
    assert mode(old_folder / "flux-serve.db") == 0o600


def test_a_storage_folder_made_by_an_older_version_is_private_at_start(tmp_path):
    root = tmp_path / "store"
    (root / "secrets").mkdir(parents=True, mode=0o755)
    (root / "jobs").mkdir(mode=0o755)
    os.chmod(root, 0o755)
    key = root / "secrets" / "url-signing-key"
    key.write_text("an old key")
    os.chmod(key, 0o644)
    JobStore(str(root))
    assert [mode(root), mode(root / "jobs"), mode(root / "secrets"), mode(key)] == [0o700, 0o700, 0o700, 0o600]


def stored_record(database: Database, job_id: str) -> str:
    with database.engine.connect() as connection:
        return connection.execute(select(jobs.c.record).where(jobs.c.id == job_id)).scalar_one()


def test_webhook_secrets_are_sealed_at_rest_and_opened_when_read(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_WEBHOOK_SECRET_KEY", raising=False)
    store = JobStore(str(tmp_path / "store"))
    database = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    db = JobsRepository(database.engine, secret_box=load_webhook_secret_box(store))
    record, claim = db.create(job())
    assert "receiver-secret" not in stored_record(database, record.id)
    assert db.load(record.id).webhook.secret == "receiver-secret", "the delivery signs with it"
    db.save(claim, db.load(record.id))
    WebhookDeliveries(db).record(db.load(record.id), attempt=0, retry_in_s=None)
    assert "receiver-secret" not in stored_record(database, record.id), "every write seals it again"
    assert db.load(record.id).webhook.secret == "receiver-secret"
    assert mode(tmp_path / "store" / "secrets" / "webhook-secret-key") == 0o600, "kept beside the signing key"
    other_replica = JobsRepository(database.engine, secret_box=load_webhook_secret_box(JobStore(str(store.root))))
    assert other_replica.load(record.id).webhook.secret == "receiver-secret", "every replica reads one key"


def test_a_repository_without_the_key_keeps_the_secret_sealed_and_loses_nothing(tmp_path, caplog):
    database = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    box = SecretBox("the key")
    record, _ = JobsRepository(database.engine, secret_box=box).create(job())
    keyless = database.jobs
    WebhookDeliveries(keyless).record(keyless.load(record.id), attempt=0, retry_in_s=None)
    assert JobsRepository(database.engine, secret_box=box).load(record.id).webhook.secret == "receiver-secret"
    with caplog.at_level(logging.ERROR, logger="flux_serve.database"):
        wrong = JobsRepository(database.engine, secret_box=SecretBox("another key")).load(record.id)
    assert wrong is not None, "the job still reads (its status, its images)"
    assert "FLUX_WEBHOOK_SECRET_KEY" in caplog.text


def test_a_sealed_secret_does_not_open_in_another_job():
    box = SecretBox("the key")
    sealed = box.seal("receiver-secret", "a" * 32)
    assert box.open(sealed, "a" * 32) == "receiver-secret"
    with pytest.raises(ValueError, match="does not open with this key"):
        box.open(sealed, "b" * 32)
    assert box.open("a secret stored before sealing", "a" * 32) == "a secret stored before sealing"
