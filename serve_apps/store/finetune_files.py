"""A finetune's files in storage, beside the jobs': its training data (as the trainer gets it), the
trainer's last checkpoint (so a killed trainer resumes), the sample images and the adapter file.

    finetunes/<id>/data/<stem>.png, <stem>.txt, <stem>_target.png   (edit pairs)
    finetunes/<id>/checkpoint.bin
    finetunes/<id>/samples/<step>.png
    finetunes/<id>/adapter/pytorch_lora_weights.safetensors           (what the LoRA path loads)

Private like every stored file (0600 in 0700 folders on a local disk). Deleting a finetune deletes
the folder.
"""

from __future__ import annotations

import json

from deployments.finetune import FinetuneExample
from serve_apps.store.storage import JobStore, is_job_id

ADAPTER_FILENAME = "pytorch_lora_weights.safetensors"
MANIFEST = "manifest.json"


class FinetuneFiles:
    def __init__(self, store: JobStore):
        self.store = store

    @property
    def adapters_root(self) -> str:
        """Where every finetune's adapter lies, as an adapter source prefix (a folder or an s3:// URL)."""
        return self._url(f"{self.store.root}/finetunes")

    def _folder(self, finetune_id: str) -> str:
        if not is_job_id(finetune_id):
            raise ValueError(f"not a finetune id: {finetune_id!r}")
        return f"{self.store.root}/finetunes/{finetune_id}"

    def _url(self, path: str) -> str:
        return path if self.store.local else self.store.fs.unstrip_protocol(path)

    def _read(self, path: str) -> bytes | None:
        try:
            return self.store.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def save_examples(self, finetune_id: str, examples: list[FinetuneExample]) -> None:
        folder = f"{self._folder(finetune_id)}/data"
        manifest = []
        for example in examples:
            self.store._write_bytes(f"{folder}/{example.name}.png", example.image_png)
            if example.target_png is not None:
                self.store._write_bytes(f"{folder}/{example.name}_target.png", example.target_png)
            manifest.append(
                {"name": example.name, "caption": example.caption, "target": example.target_png is not None}
            )
        self.store._write_bytes(f"{folder}/{MANIFEST}", json.dumps(manifest).encode())

    def load_examples(self, finetune_id: str) -> list[FinetuneExample]:
        folder = f"{self._folder(finetune_id)}/data"
        manifest = json.loads(self._read(f"{folder}/{MANIFEST}") or b"[]")
        return [
            FinetuneExample(
                name=item["name"],
                image_png=self.store.fs.cat_file(f"{folder}/{item['name']}.png"),
                caption=item["caption"],
                target_png=self.store.fs.cat_file(f"{folder}/{item['name']}_target.png") if item["target"] else None,
            )
            for item in manifest
        ]

    def save_checkpoint(self, finetune_id: str, data: bytes) -> None:
        self.store._write_bytes(f"{self._folder(finetune_id)}/checkpoint.bin", data)

    def load_checkpoint(self, finetune_id: str) -> bytes | None:
        return self._read(f"{self._folder(finetune_id)}/checkpoint.bin")

    def save_sample(self, finetune_id: str, step: int, png: bytes) -> str:
        name = f"{step:05d}.png"
        self.store._write_bytes(f"{self._folder(finetune_id)}/samples/{name}", png)
        return name

    def load_sample(self, finetune_id: str, name: str) -> bytes | None:
        if not (name.endswith(".png") and name[:-4].isdigit()):
            return None
        return self._read(f"{self._folder(finetune_id)}/samples/{name}")

    def save_adapter(self, finetune_id: str, data: bytes) -> str:
        """Store the adapter file; its source for the LoRA registry (the folder that holds it)."""
        folder = f"{self._folder(finetune_id)}/adapter"
        self.store._write_bytes(f"{folder}/{ADAPTER_FILENAME}", data)
        return self._url(folder)

    def delete(self, finetune_id: str) -> None:
        folder = self._folder(finetune_id)
        if self.store.fs.exists(folder):
            self.store.fs.rm(folder, recursive=True)
