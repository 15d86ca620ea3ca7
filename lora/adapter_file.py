"""The adapter file format, apart from the trainer that writes it.

An adapter is one .safetensors file, named as diffusers' `save_lora_weights` names it, alone or
in a folder; what flux-serve knows about it (base model, trigger word, license, rank) is JSON in
the file's header under METADATA_KEY. Serve-time code reads adapters through this module, so a
replica never imports the trainer (peft, pyarrow) to learn two names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

ADAPTER_FILENAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "flux_serve"


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


def inspect_adapter(path: Path) -> AdapterInfo:
    """Tensor shapes and our metadata from the header alone; no tensor is loaded."""
    file = adapter_file(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            header = handle.metadata() or {}
    except SafetensorError as error:
        raise AdapterMismatch(
            f"{file.name} is not a readable safetensors file ({error}); save the adapter with safetensors."
        ) from None
    metadata = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}
    return AdapterInfo(file, shapes, metadata)


def write_metadata(path: Path, metadata: dict) -> None:
    """Keep the file's tensors and header, adding ours under METADATA_KEY."""
    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    header[METADATA_KEY] = json.dumps(metadata)
    save_file(tensors, str(path), metadata=header)
