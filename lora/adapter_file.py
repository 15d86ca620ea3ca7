"""The adapter file format, apart from the trainer that writes it.

An adapter is one .safetensors file, named as diffusers' `save_lora_weights` names it, alone or
in a folder; what flux-serve knows about it (base model, trigger word, license, rank) is JSON in
the file's header under METADATA_KEY. Serve-time code reads adapters through this module, so a
replica never imports the trainer (peft, pyarrow) to learn two names.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

ADAPTER_FILENAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "flux_serve"
HEADER_LENGTH_BYTES = 8  # safetensors: a little-endian u64, then that many bytes of JSON
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own cap on the JSON header


class AdapterMismatch(ValueError):
    """An adapter that does not fit the model a request targets; the message says why."""


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    shapes: dict[str, tuple[int, ...]]
    metadata: dict

    @property
    def rank(self) -> int | None:
        ranks = {shape[0] for key, shape in self.shapes.items() if key.endswith("lora_A.weight")}
        return ranks.pop() if len(ranks) == 1 else None

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "tensors": len(self.shapes),
            "rank": self.rank,
            "modules": len({key.rsplit(".lora_", 1)[0] for key in self.shapes}),
            **{key: self.metadata.get(key) for key in ("base_model", "trigger_word", "license", "tags")},
        }


def adapter_file(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / ADAPTER_FILENAME
    if not path.exists() or path.suffix != ".safetensors":
        raise AdapterMismatch(f"{path} is not a .safetensors adapter file (or a folder holding {ADAPTER_FILENAME}).")
    return path


def read_header(file: Path) -> dict:
    """The safetensors JSON header (tensor names, dtypes, shapes, `__metadata__`), read without torch
    so the ingress can check an adapter; the tensors are not read."""
    unreadable = f"{file.name} is not a readable safetensors file"
    with open(file, "rb") as handle:
        prefix = handle.read(HEADER_LENGTH_BYTES)
        if len(prefix) != HEADER_LENGTH_BYTES:
            raise AdapterMismatch(f"{unreadable} (too short); save the adapter with safetensors.")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or length > file.stat().st_size - HEADER_LENGTH_BYTES:
            raise AdapterMismatch(f"{unreadable} (header length {length}); save the adapter with safetensors.")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise AdapterMismatch(f"{unreadable} ({error}); save the adapter with safetensors.") from None
    if not isinstance(header, dict):
        raise AdapterMismatch(f"{unreadable} (its header is not a JSON object); save the adapter with safetensors.")
    return header


def inspect_adapter(path: Path) -> AdapterInfo:
    """Tensor shapes and our metadata from the header alone; no tensor is loaded."""
    file = adapter_file(path)
    header = read_header(file)
    tensors = {key: entry for key, entry in header.items() if key != "__metadata__"}
    try:
        shapes = {key: tuple(int(side) for side in entry["shape"]) for key, entry in tensors.items()}
        metadata = json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "{}"))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise AdapterMismatch(
            f"{file.name} has a malformed safetensors header ({error}); save the adapter with safetensors."
        ) from None
    if not isinstance(metadata, dict):
        raise AdapterMismatch(
            f"{file.name} has {METADATA_KEY!r} metadata that is JSON but not an object (a {type(metadata).__name__}); "
            f'write it as a JSON object such as {{"base_model": ..., "trigger_word": ...}} (lora.adapter_file.write_metadata).'
        )
    return AdapterInfo(file, shapes, metadata)


def write_metadata(path: Path, metadata: dict) -> None:
    """Keep the file's tensors and header, adding ours under METADATA_KEY (the trainer's side: loads torch)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    header[METADATA_KEY] = json.dumps(metadata)
    save_file(tensors, str(path), metadata=header)
