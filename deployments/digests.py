"""Content digests of weights and adapter files, for image manifests: the same bytes always give the same digest.

A file's digest is kept per (path, size, modification time), so a replica hashes each checkpoint or LoRA file once,
and in a small JSON file on the node (`FLUX_SERVE_DIGEST_CACHE`, default ~/.cache/flux-serve/file-digests.json), so
the next replica started there does not hash gigabytes again before its first image's manifest. A folder's digest
covers every file in it (hidden ones aside) by relative path, so renaming or editing any file of a checkpoint
changes it, and copying the folder elsewhere does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger("flux_serve.digests")

CHUNK_BYTES = 8 * 1024 * 1024
DIGEST_CACHE_ENV = "FLUX_SERVE_DIGEST_CACHE"
DIGEST_CACHE_ENTRIES = 4096  # the newest files hashed on this node; older ones are hashed again if met again

_known: dict[tuple[str, int, int], str] = {}
_known_lock = threading.Lock()


def digest_cache_path() -> Path:
    return Path(os.environ.get(DIGEST_CACHE_ENV) or Path.home() / ".cache" / "flux-serve" / "file-digests.json")


def _stored_digests() -> dict[str, str]:
    try:
        stored = json.loads(digest_cache_path().read_text())
        return stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        return {}


def _store_digest(key: str, digest: str) -> None:
    """Best effort: a node whose cache cannot be written hashes again at the next start, nothing worse."""
    path = digest_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = {**_stored_digests(), key: digest}
        stored = dict(list(stored.items())[-DIGEST_CACHE_ENTRIES:])
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
        temporary.write_text(json.dumps(stored))
        temporary.replace(path)
    except OSError as error:
        logger.info("weights digest not kept in %s (%s): the next start hashes again", path, error)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, hashed once per (path, size, mtime) on this node."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    stored_key = "\0".join(map(str, key))
    with _known_lock:
        if key in _known:
            return _known[key]
        if stored_key in (stored := _stored_digests()):
            _known[key] = stored[stored_key]
            return _known[key]
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    with _known_lock:
        _known[key] = digest.hexdigest()
        _store_digest(stored_key, _known[key])
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
