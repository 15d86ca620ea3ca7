"""The files of jobs under one storage URL, through fsspec: images, input images and shared secrets.

A local directory by default; `s3://bucket/prefix` goes through s3fs. Every replica reads
and writes the same store. Job state (records, history, idempotency, cancel requests) is in the
database (serve_apps/db); progress and cancel travel on the live channel (serve_apps/live).
Layout: jobs/<id>/images/<n>.<ext>, refs/<sha256>.png, uploads/<key id>/<upload id>.png, secrets/.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass

import fsspec

from deployments.contracts import OUTPUT_FORMATS

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}\Z")
IMAGE_NAME_PATTERN = re.compile(rf"^[0-9]{{1,2}}\.({'|'.join(OUTPUT_FORMATS)})\Z")
REFERENCE_NAME_PATTERN = re.compile(r"^[0-9a-f]{64}\.png\Z")
UPLOAD_ID_PATTERN = re.compile(r"^upload_[0-9a-f]{32}\Z")
UPLOAD_KEY_PATTERN = re.compile(r"^[0-9a-f]{12}\Z")
UPLOAD_FILE_PATTERN = re.compile(r"^upload_[0-9a-f]{32}\.png\Z")
# a stored reference older than this is written again when a submit sends it, so its age tells
# retention how long ago a job last named it (retention waits twice this before deleting one)
REFERENCE_REFRESH_S = 1800.0


def modified_s(info: dict) -> float:
    """A file's last write in epoch seconds from fsspec's details (local `mtime`, S3 `LastModified`);
    unknown counts as now, so it is never deleted for its age."""
    value = info.get("mtime", info.get("LastModified"))
    if value is None:
        return time.time()
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


@dataclass(frozen=True)
class StoredUploads:
    """What one key keeps under uploads/: how many files, their bytes, and when the oldest was written
    (epoch seconds; None when there is none)."""

    count: int = 0
    total_bytes: int = 0
    oldest_written_s: float | None = None


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
            self._narrow_existing()
        else:
            self.fs.makedirs(self.root, exist_ok=True)

    def _narrow_existing(self) -> None:
        """A folder made by an older version (0755, its files 0644) becomes private at start: the root
        and its top folders 0700, which closes every file below to other users without walking them
        all, and the shared secrets 0600."""
        os.chmod(self.root, PRIVATE_FOLDER_MODE)
        for folder in ("jobs", "refs", "uploads", "secrets"):
            path = f"{self.root}/{folder}"
            if os.path.isdir(path):
                os.chmod(path, PRIVATE_FOLDER_MODE)
        secrets_folder = f"{self.root}/secrets"
        if os.path.isdir(secrets_folder):
            for name in os.listdir(secrets_folder):
                os.chmod(f"{secrets_folder}/{name}", PRIVATE_FILE_MODE)

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

    # input images: references content-addressed (refs/<sha256>.png, shared by every job that sends
    # the same image), uploads private to the key that made them (uploads/<key id>/<upload id>.png)
    def save_reference(self, name: str, data: bytes) -> None:
        """Written when missing or older than REFERENCE_REFRESH_S, so one image sent with hundreds of
        jobs is written about twice an hour, and one a submit in flight is about to name is always
        younger than retention's grace."""
        if not REFERENCE_NAME_PATTERN.match(name):
            raise ValueError(f"not a reference name: {name!r}")
        path = f"{self.root}/refs/{name}"
        try:
            fresh = modified_s(self.fs.info(path)) >= time.time() - REFERENCE_REFRESH_S
        except FileNotFoundError:
            fresh = False
        if not fresh:
            self._write_bytes(path, data)

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

    def stored_uploads(self, key_id: str) -> StoredUploads:
        """What `key_id` keeps stored, listed from storage itself, so every replica counts the same files
        (one listing: a key holds at most a few hundred)."""
        folder = f"{self.root}/uploads/{key_id}"
        if not UPLOAD_KEY_PATTERN.match(key_id) or not self.fs.exists(folder):
            return StoredUploads()
        found = self.fs.find(folder, detail=True).items()
        files = [info for path, info in found if UPLOAD_FILE_PATTERN.match(path.rsplit("/", 1)[1])]
        if not files:
            return StoredUploads()
        return StoredUploads(len(files), sum(int(info["size"]) for info in files), min(map(modified_s, files)))

    def delete_uploads_before(self, cutoff_s: float) -> int:
        """Delete uploads last written before `cutoff_s` (epoch seconds); returns how many went. A job
        that used one keeps its own copy under refs/, so this loses no job's input."""
        folder = f"{self.root}/uploads"
        if not self.fs.exists(folder):
            return 0
        old = [path for path, info in self.fs.find(folder, detail=True).items() if modified_s(info) < cutoff_s]
        for path in old:
            self.fs.rm_file(path)
        return len(old)

    def references_written_before(self, cutoff_s: float) -> list[str]:
        """Names of stored references last written before `cutoff_s` (epoch seconds)."""
        folder = f"{self.root}/refs"
        if not self.fs.exists(folder):
            return []
        found = [(path.rsplit("/", 1)[1], info) for path, info in self.fs.find(folder, detail=True).items()]
        return [name for name, info in found if REFERENCE_NAME_PATTERN.match(name) and modified_s(info) < cutoff_s]

    def delete_reference(self, name: str) -> None:
        if not REFERENCE_NAME_PATTERN.match(name):
            raise ValueError(f"not a reference name: {name!r}")
        try:
            self.fs.rm_file(f"{self.root}/refs/{name}")
        except FileNotFoundError:
            pass

    def delete_reference_written_before(self, name: str, cutoff_s: float) -> bool:
        """Delete a stored reference only if it is still older than `cutoff_s`; True if it went.

        Retention lists old references, asks the database which no job names, then deletes: a submit
        on another replica may write the reference again (fresh) in between, its job row not yet in
        the database, so its age is checked again here. Locally the file is first moved aside, so what
        is checked is what is deleted: a fresh one goes back (unless a newer one already took its place)
        and a submit writing after the move makes a new file. On object storage there is no move: the
        age is read just before the delete, leaving a window of one request instead of the whole pass."""
        if not REFERENCE_NAME_PATTERN.match(name):
            raise ValueError(f"not a reference name: {name!r}")
        path = f"{self.root}/refs/{name}"
        if not self.local:
            try:
                if modified_s(self.fs.info(path)) >= cutoff_s:
                    return False
                self.fs.rm_file(path)
            except FileNotFoundError:
                return False
            return True
        aside = f"{path}.{uuid.uuid4().hex}.deleting"
        try:
            if os.stat(path).st_mtime >= cutoff_s:
                return False  # written again already: not even moved, so no reader misses it
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            if os.stat(aside).st_mtime < cutoff_s:
                return True
            try:
                os.link(aside, path)  # fails if a submit wrote a newer one meanwhile: that one stays
            except FileExistsError:
                pass
            return False
        finally:
            os.remove(aside)

    def delete_job_files(self, job_id: str) -> None:
        """The files of one job (retention)."""
        try:
            self.fs.rm(self._job_dir(job_id), recursive=True)
        except FileNotFoundError:
            pass

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
