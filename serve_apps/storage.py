"""Job records, progress and images under one storage URL, through fsspec.

A local directory by default; `s3://bucket/prefix` goes through s3fs. Every replica reads
and writes the same store, so any ingress answers any job and a restart loses nothing.
Layout: jobs/<id>/job.json (the record), jobs/<id>/progress.json (written by the denoiser),
jobs/<id>/images/<n>.<ext>, and pending/<id> markers for jobs not finished yet.
"""

from __future__ import annotations

import json
import re
import uuid

import fsspec

JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
IMAGE_NAME_PATTERN = re.compile(r"^[0-9]{1,2}\.(png|jpeg|webp)$")


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(value: str) -> bool:
    return bool(JOB_ID_PATTERN.match(value))


class JobStore:
    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.fs.makedirs(f"{self.root}/pending", exist_ok=True)

    def _job_dir(self, job_id: str) -> str:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return f"{self.root}/jobs/{job_id}"

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Write then move into place, so a reader never sees half a file (S3 puts are atomic anyway)."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if "file" in self.fs.protocol:
            staging = f"{path}.{uuid.uuid4().hex}.tmp"
            self.fs.pipe_file(staging, data)
            self.fs.mv(staging, path)
        else:
            self.fs.pipe_file(path, data)

    def _read_json(self, path: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    # records
    def save_job(self, record: dict) -> None:
        self._write_bytes(f"{self._job_dir(record['id'])}/job.json", json.dumps(record).encode())

    def load_job(self, job_id: str) -> dict | None:
        if not is_job_id(job_id):
            return None
        return self._read_json(f"{self._job_dir(job_id)}/job.json")

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
        names = [path.rsplit("/", 1)[-1] for path in self.fs.ls(f"{self.root}/pending", detail=False)]
        return [name for name in names if is_job_id(name)]
