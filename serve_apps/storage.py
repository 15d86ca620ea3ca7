"""Job records, progress and images under one storage URL, through fsspec.

A local directory by default; `s3://bucket/prefix` goes through s3fs. Every replica reads
and writes the same store, so any ingress answers any job and a restart loses nothing.
Layout: jobs/<id>/job.json (the record), jobs/<id>/progress.json (written by the denoiser),
jobs/<id>/cancel (a cancel request), jobs/<id>/images/<n>.<ext>, pending/<id> markers for
jobs not finished yet, history/<key id>/<newest-first name> markers for each key's jobs,
idempotency/<key id>/<hash of the Idempotency-Key> holding a job id, and secrets/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid

import fsspec

from deployments.contracts import OUTPUT_FORMATS
from serve_apps.records import JobRecord

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
KEY_ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")
HISTORY_NAME_PATTERN = re.compile(r"^[0-9]{16}_[0-9a-f]{32}$")
NEWEST_FIRST_BASE_MS = 10**16
IMAGE_NAME_PATTERN = re.compile(rf"^[0-9]{{1,2}}\.({'|'.join(OUTPUT_FORMATS)})$")
REFERENCE_NAME_PATTERN = re.compile(r"^[0-9a-f]{64}\.png$")
UPLOAD_ID_PATTERN = re.compile(r"^upload_[0-9a-f]{32}$")
UPLOAD_KEY_PATTERN = re.compile(r"^[0-9a-f]{12}$")


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(value: str) -> bool:
    return bool(JOB_ID_PATTERN.match(value))


class JobStore:
    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        options = dict(storage_options or {})
        if url.startswith("s3://"):
            options.setdefault("use_listings_cache", False)  # other replicas write here too
        self.fs, self.root = fsspec.core.url_to_fs(url, **options)
        self.root = self.root.rstrip("/")
        self.local = "file" in self.fs.protocol
        if self.local:
            os.makedirs(self.root, mode=PRIVATE_FOLDER_MODE, exist_ok=True)
            os.makedirs(f"{self.root}/pending", mode=PRIVATE_FOLDER_MODE, exist_ok=True)
        else:
            self.fs.makedirs(f"{self.root}/pending", exist_ok=True)

    def _job_dir(self, job_id: str) -> str:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return f"{self.root}/jobs/{job_id}"

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Write then move into place, so a reader never sees half a file (S3 puts are atomic anyway).

        Local files are the service user's alone (0600 in 0700 folders): they hold webhook secrets,
        the URL-signing key and people's images."""
        if self.local:
            os.replace(self._private_staging(path, data), path)
        else:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, data)

    def _private_staging(self, path: str, data: bytes) -> str:
        """A new 0600 file beside `path` holding `data`, its folders made 0700."""
        folder = path.rsplit("/", 1)[0]
        parts = folder.removeprefix(self.root).strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            os.makedirs("/".join([self.root, *parts[:depth]]), mode=PRIVATE_FOLDER_MODE, exist_ok=True)
        staging = f"{path}.{uuid.uuid4().hex}.tmp"
        with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE), "wb") as file:
            file.write(data)
        return staging

    def _read_json(self, path: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    # records
    def save_job(self, record: JobRecord) -> None:
        self._write_bytes(f"{self._job_dir(record.id)}/job.json", record.model_dump_json().encode())

    def load_job(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        stored = self._read_json(f"{self._job_dir(job_id)}/job.json")
        return None if stored is None else JobRecord.model_validate(stored)

    # progress, written by the denoiser replica
    def save_progress(self, job_id: str, progress: dict) -> None:
        self._write_bytes(f"{self._job_dir(job_id)}/progress.json", json.dumps(progress).encode())

    def load_progress(self, job_id: str) -> dict | None:
        return self._read_json(f"{self._job_dir(job_id)}/progress.json")

    # images
    def save_image(self, job_id: str, name: str, data: bytes) -> None:
        self._write_bytes(f"{self._job_dir(job_id)}/images/{name}", data)

    def load_image(self, job_id: str, name: str) -> bytes | None:
        if not is_job_id(job_id) or not IMAGE_NAME_PATTERN.match(name):
            return None
        try:
            return self.fs.cat_file(f"{self._job_dir(job_id)}/images/{name}")
        except FileNotFoundError:
            return None

    # unfinished jobs, so a sweep finds orphans without listing every job ever made
    def mark_pending(self, job_id: str) -> None:
        self._write_bytes(f"{self.root}/pending/{job_id}", b"")

    def clear_pending(self, job_id: str) -> None:
        try:
            self.fs.rm_file(f"{self.root}/pending/{job_id}")
        except FileNotFoundError:
            pass

    def pending_job_ids(self) -> list[str]:
        self.fs.invalidate_cache(f"{self.root}/pending")
        try:
            paths = self.fs.ls(f"{self.root}/pending", detail=False)
        except FileNotFoundError:  # an object store has no empty folders
            return []
        return [name for name in (path.rsplit("/", 1)[-1] for path in paths) if is_job_id(name)]

    def all_jobs(self):
        """Every job record (for exports), in no particular order."""
        for path in self.fs.glob(f"{self.root}/jobs/*/job.json"):
            yield JobRecord.model_validate_json(self.fs.cat_file(path))

    # input images: references content-addressed (refs/<sha256>.png, shared by every job that sends
    # the same image), uploads private to the key that made them (uploads/<key id>/<upload id>.png)
    def save_reference(self, name: str, data: bytes) -> None:
        if not REFERENCE_NAME_PATTERN.match(name):
            raise ValueError(f"not a reference name: {name!r}")
        if not self.fs.exists(f"{self.root}/refs/{name}"):
            self._write_bytes(f"{self.root}/refs/{name}", data)

    def load_reference(self, name: str) -> bytes | None:
        if not REFERENCE_NAME_PATTERN.match(name):
            return None
        try:
            return self.fs.cat_file(f"{self.root}/refs/{name}")
        except FileNotFoundError:
            return None

    def save_upload(self, key_id: str, upload_id: str, data: bytes) -> None:
        if not (UPLOAD_KEY_PATTERN.match(key_id) and UPLOAD_ID_PATTERN.match(upload_id)):
            raise ValueError(f"not a key id and upload id: {key_id!r}, {upload_id!r}")
        self._write_bytes(f"{self.root}/uploads/{key_id}/{upload_id}.png", data)

    def load_upload(self, key_id: str, upload_id: str) -> bytes | None:
        if not (UPLOAD_KEY_PATTERN.match(key_id) and UPLOAD_ID_PATTERN.match(upload_id)):
            return None
        try:
            return self.fs.cat_file(f"{self.root}/uploads/{key_id}/{upload_id}.png")
        except FileNotFoundError:
            return None

    # cancel requests, read by the denoiser between steps
    def request_cancel(self, job_id: str) -> None:
        self._write_bytes(f"{self._job_dir(job_id)}/cancel", b"")

    def is_cancel_requested(self, job_id: str) -> bool:
        return self.fs.exists(f"{self._job_dir(job_id)}/cancel")

    # per-key history, newest first
    def _history_dir(self, key_id: str) -> str:
        if not KEY_ID_PATTERN.match(key_id):
            raise ValueError(f"not a key id: {key_id!r}")
        return f"{self.root}/history/{key_id}"

    def add_history(self, key_id: str, job_id: str, created_at: float) -> None:
        newest_first = NEWEST_FIRST_BASE_MS - int(created_at * 1000)
        self._write_bytes(f"{self._history_dir(key_id)}/{newest_first:016d}_{job_id}", b"")

    def list_history(self, key_id: str, limit: int, cursor: str | None = None) -> tuple[list[str], str | None]:
        """Job ids of `key_id`, newest first, after `cursor`; and the cursor of the next page."""
        folder = self._history_dir(key_id)
        try:
            self.fs.invalidate_cache(folder)
            names = sorted(path.rsplit("/", 1)[-1] for path in self.fs.ls(folder, detail=False))
        except FileNotFoundError:
            return [], None
        names = [name for name in names if HISTORY_NAME_PATTERN.match(name) and (cursor is None or name > cursor)]
        page = names[:limit]
        next_cursor = page[-1] if len(names) > limit else None
        return [name.split("_", 1)[1] for name in page], next_cursor

    # idempotency: the first job made with a key's Idempotency-Key is the answer to its retries
    def _idempotency_path(self, key_id: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return f"{self.root}/idempotency/{key_id}/{digest}"

    def find_idempotent(self, key_id: str, idempotency_key: str) -> str | None:
        try:
            return self.fs.cat_file(self._idempotency_path(key_id, idempotency_key)).decode()
        except FileNotFoundError:
            return None

    def remember_idempotent(self, key_id: str, idempotency_key: str, job_id: str) -> None:
        self._write_bytes(self._idempotency_path(key_id, idempotency_key), job_id.encode())

    # registered LoRA adapters
    def save_lora(self, record: dict) -> None:
        self._write_bytes(f"{self.root}/loras/{record['id']}.json", json.dumps(record).encode())

    def load_lora(self, lora_id: str) -> dict | None:
        return self._read_json(f"{self.root}/loras/{lora_id}.json")

    def list_loras(self) -> list[dict]:
        try:
            self.fs.invalidate_cache(f"{self.root}/loras")
            paths = sorted(self.fs.ls(f"{self.root}/loras", detail=False))
        except FileNotFoundError:
            return []
        return [json.loads(self.fs.cat_file(path)) for path in paths if path.endswith(".json")]

    # secrets every replica shares
    def shared_secret(self, name: str, make) -> str:
        """The secret every replica shares, made by the first to ask. Locally the new file is linked into
        place, which fails if another replica got there first, so all read the one that won. On object
        storage the last writer wins; the sleep lets a racing write land before the read (set the secret
        in the environment on clusters, e.g. FLUX_URL_SIGNING_KEY from a Kubernetes Secret)."""
        path = f"{self.root}/secrets/{name}"
        try:
            return self.fs.cat_file(path).decode()
        except FileNotFoundError:
            pass
        if self.local:
            staging = self._private_staging(path, make().encode())
            try:
                os.link(staging, path)
            except FileExistsError:
                pass
            finally:
                os.remove(staging)
        else:
            self.fs.pipe_file(path, make().encode())
            time.sleep(0.05)
        return self.fs.cat_file(path).decode()
