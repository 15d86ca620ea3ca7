"""Content digests of weights and adapter files, for image manifests: the same bytes always give the same digest.

A file's digest is kept per (path, size, modification time), so a replica hashes each checkpoint or LoRA file once;
a folder's digest covers every file in it (hidden ones aside) by relative path, so renaming or editing any file of a
checkpoint changes it, and copying the folder elsewhere does not.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

CHUNK_BYTES = 8 * 1024 * 1024

_known: dict[tuple[str, int, int], str] = {}
_known_lock = threading.Lock()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, hashed once per (path, size, mtime) in this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _known_lock:
        if key in _known:
            return _known[key]
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    with _known_lock:
        _known[key] = digest.hexdigest()
    return _known[key]


def folder_sha256(folder: str | Path) -> str:
    """sha256 over each file's relative path and sha256, in path order: one digest for a checkpoint folder."""
    folder = Path(folder)
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise FileNotFoundError(f"{folder} holds no files to digest; point weights at a checkpoint folder.")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()
