"""Where adapters come from: a local file or folder under an allowed root, an s3:// URL, or a
Hugging Face repo id. Remote ones are copied once into a local cache on each machine."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec

from lora.adapter_file import ADAPTER_FILENAME

DEFAULT_CACHE_DIR = Path(os.environ.get("FLUX_SERVE_CACHE", Path.home() / ".cache" / "flux-serve")) / "loras"


class SourceError(ValueError):
    """An adapter source that is not allowed or cannot be fetched."""


def fetch_adapter(
    source: str, allowed_roots: list[str], cache_dir: Path = DEFAULT_CACHE_DIR, storage_options: dict | None = None
) -> Path:
    """A local .safetensors path for `source`, downloading remote sources into `cache_dir` once."""
    if source.startswith("s3://"):
        return _download(source, cache_dir, storage_options or {})
    if "://" in source:
        raise SourceError(
            f"LoRA source {source!r}: only local paths, s3:// URLs and Hugging Face repo ids are supported."
        )
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith("."):
        resolved = path.resolve()
        roots = [Path(root).expanduser().resolve() for root in allowed_roots]
        if not any(resolved == root or root in resolved.parents for root in roots):
            allowed = ", ".join(str(root) for root in roots) or "none configured (set loras.allowed_roots)"
            raise SourceError(f"LoRA source {source!r} is outside the allowed folders: {allowed}.")
        if resolved.is_dir():
            resolved = resolved / ADAPTER_FILENAME
        if not resolved.exists():
            raise SourceError(f"LoRA source {source!r} does not exist.")
        return resolved
    if source.count("/") == 1:
        return _from_hub(source, cache_dir)
    raise SourceError(
        f"LoRA source {source!r} is neither an absolute path, an s3:// URL nor a repo id like 'user/name'."
    )


def _download(url: str, cache_dir: Path, storage_options: dict) -> Path:
    target = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.safetensors"
    if target.exists():
        return target
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if fs.isdir(path):
        path = f"{path.rstrip('/')}/{ADAPTER_FILENAME}"
    if not fs.exists(path):
        raise SourceError(f"LoRA source {url!r} has no {ADAPTER_FILENAME} (or is not a .safetensors file).")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(f".{os.getpid()}.tmp")
    fs.get_file(path, str(staging))
    os.replace(staging, target)
    return target


def _from_hub(repo_id: str, cache_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, ADAPTER_FILENAME, cache_dir=str(cache_dir / "hub")))
    except Exception as error:
        raise SourceError(
            f"Could not fetch LoRA {repo_id!r} from the Hugging Face hub ({type(error).__name__}); "
            "download it and register the local path or an s3:// copy instead."
        ) from None
