"""Where adapters come from: a local file or folder under an allowed root, an s3:// object under an
allowed prefix, or a Hugging Face repo of an allowed user or org. Remote ones are copied once into a
local cache on each machine, after their size is checked against the download cap.

The server fetches with its own credentials, so every remote source must be allow-listed
(`loras.allowed_s3_prefixes`, `loras.allowed_hub_orgs`; empty refuses them all). An s3:// source
that is outside the list, missing, or not a .safetensors file gets one and the same message, so
the refusal does not tell a caller which of the server's objects exist.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from lora.adapter_file import ADAPTER_FILENAME

DEFAULT_CACHE_DIR = Path(os.environ.get("FLUX_SERVE_CACHE", Path.home() / ".cache" / "flux-serve")) / "loras"


class SourceError(ValueError):
    """An adapter source that is not allowed or cannot be fetched."""


@dataclass(frozen=True)
class AdapterSources:
    """The allow-lists, the download cap, and how remote files are reached and cached."""

    allowed_roots: list[str] = field(default_factory=list)
    allowed_s3_prefixes: list[str] = field(default_factory=list)
    allowed_hub_orgs: list[str] = field(default_factory=list)
    max_download_bytes: int = 1024**3
    storage_options: dict = field(default_factory=dict)
    cache_dir: Path = DEFAULT_CACHE_DIR

    def fetch(self, source: str) -> Path:
        """A local .safetensors path for `source`, downloading remote sources into `cache_dir` once."""
        if source.startswith("s3://"):
            return self._from_s3(source)
        if "://" in source:
            raise SourceError(
                f"LoRA source {source!r}: only local paths, s3:// URLs and Hugging Face repo ids are supported."
            )
        path = Path(source).expanduser()
        if path.is_absolute() or source.startswith("."):
            return self._local(source, path)
        if source.count("/") == 1:
            return self._from_hub(source)
        raise SourceError(
            f"LoRA source {source!r} is neither an absolute path, an s3:// URL nor a repo id like 'user/name'."
        )

    def _local(self, source: str, path: Path) -> Path:
        resolved = path.resolve()
        roots = [Path(root).expanduser().resolve() for root in self.allowed_roots]
        if not any(resolved == root or root in resolved.parents for root in roots):
            allowed = ", ".join(str(root) for root in roots) or "none configured (set loras.allowed_roots)"
            raise SourceError(f"LoRA source {source!r} is outside the allowed folders: {allowed}.")
        if resolved.is_dir():
            resolved = resolved / ADAPTER_FILENAME
        if not resolved.exists():
            raise SourceError(f"LoRA source {source!r} does not exist.")
        return resolved

    def _s3_refusal(self, url: str) -> SourceError:
        allowed = ", ".join(self.allowed_s3_prefixes) or "none configured (set loras.allowed_s3_prefixes)"
        return SourceError(
            f"LoRA source {url!r} is not an adapter this server may fetch: an s3:// source must be a .safetensors "
            f"object (or a folder holding {ADAPTER_FILENAME}) under an allowed prefix: {allowed}."
        )

    def _s3_allowed(self, url: str) -> bool:
        if "/../" in f"{url}/" or "/./" in f"{url}/":
            return False
        prefixes = [prefix if prefix.endswith("/") else f"{prefix}/" for prefix in self.allowed_s3_prefixes]
        return any(url.startswith(prefix) for prefix in prefixes)

    def _from_s3(self, url: str) -> Path:
        if not self._s3_allowed(url):
            raise self._s3_refusal(url)
        target = self.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.safetensors"
        if target.exists():
            return target
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        try:
            info = fs.info(path)
            if info["type"] == "directory":
                path = f"{path.rstrip('/')}/{ADAPTER_FILENAME}"
                info = fs.info(path)
        except FileNotFoundError:
            raise self._s3_refusal(url) from None
        if not path.endswith(".safetensors"):
            raise self._s3_refusal(url)
        self._check_size(url, info.get("size"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(f".{os.getpid()}.tmp")
        fs.get_file(path, str(staging))
        os.replace(staging, target)
        return target

    def _check_size(self, source: str, size_bytes: int | None) -> None:
        if size_bytes is None or size_bytes > self.max_download_bytes:
            size = "of unknown size" if size_bytes is None else f"{size_bytes:,} bytes"
            raise SourceError(
                f"LoRA source {source!r} is {size}, over the download cap of {self.max_download_bytes:,} bytes "
                "(loras.max_download_bytes); a LoRA of rank 16-64 is well under 1 GB."
            )

    def _from_hub(self, repo_id: str) -> Path:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

        org = repo_id.split("/", 1)[0]
        if org not in self.allowed_hub_orgs:
            allowed = ", ".join(self.allowed_hub_orgs) or "none configured (set loras.allowed_hub_orgs)"
            raise SourceError(
                f"LoRA source {repo_id!r}: adapters come from the Hugging Face hub only from allowed users or orgs: "
                f"{allowed}."
            )
        try:
            size_bytes = get_hf_file_metadata(hf_hub_url(repo_id, ADAPTER_FILENAME)).size
        except Exception as error:
            raise hub_unreachable(repo_id, error) from None
        self._check_size(repo_id, size_bytes)
        try:
            return Path(hf_hub_download(repo_id, ADAPTER_FILENAME, cache_dir=str(self.cache_dir / "hub")))
        except Exception as error:
            raise hub_unreachable(repo_id, error) from None


def hub_unreachable(repo_id: str, error: Exception) -> SourceError:
    return SourceError(
        f"Could not fetch LoRA {repo_id!r} from the Hugging Face hub ({type(error).__name__}); "
        "download it and register the local path or an s3:// copy instead."
    )
