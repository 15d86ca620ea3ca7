"""The LoRA adapters a denoiser holds loaded, by the request's adapter set: loaded on demand, least recently used
out, each file's digest kept for the images' manifests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from cachetools import LRUCache

from deployments.contracts import AdapterRef, InvalidRequestError
from deployments.digests import file_sha256

AdapterFiles = Callable[[AdapterRef], Path]


class AdapterCache:
    """LoRA adapters loaded into the pipeline on demand, at most `capacity`, least recently used out.

    Requests without adapters run with LoRA disabled, so they match a fresh base model.
    `adapter_files` turns an adapter's registered source into a local file (fetched once).
    """

    def __init__(self, pipeline, capacity: int, adapter_files: AdapterFiles):
        self.pipeline = pipeline
        self.adapter_files = adapter_files
        self.loaded: LRUCache = LRUCache(maxsize=capacity)
        self.sha256: dict[str, str] = {}  # each loaded file's digest, by its source, for the manifests
        self.loads = 0

    @staticmethod
    def peft_name(key: str) -> str:
        """peft module names cannot hold '.', and ids are user text: name adapters by a hash."""
        return "lora_" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def activate(self, adapters: tuple[AdapterRef, ...]) -> None:
        if not adapters:
            if self.loaded:
                self.pipeline.disable_lora()
            return
        if len(adapters) > self.loaded.maxsize:
            raise InvalidRequestError("loras", f"at most {self.loaded.maxsize} adapters can be combined here.")
        keys = [f"{adapter.id}\0{adapter.source}" for adapter in adapters]
        for key, adapter in zip(keys, adapters):
            if key in self.loaded:
                self.loaded[key]  # touch: most recently used
                continue
            while len(self.loaded) >= self.loaded.maxsize:
                evicted, _ = self.loaded.popitem()
                self.pipeline.delete_adapters(self.peft_name(evicted))
            path = self.adapter_files(adapter)
            self.sha256[adapter.source] = file_sha256(path)
            self.pipeline.load_lora_weights(str(path), adapter_name=self.peft_name(key))
            self.loaded[key] = adapter.id
            self.loads += 1
        self.pipeline.enable_lora()
        self.pipeline.set_adapters([self.peft_name(key) for key in keys], [a.scale for a in adapters])
