"""Where a finetune trains: a Ray actor of its own, asking for the GPU share `training.num_gpus`, so a
cluster places it on a GPU node beside (or instead of) serving replicas.

The trainer class is named by import path in config (`training.worker`, like Serve's own
`import_path`) and imported inside the actor's process only: the ingress, which starts the actor,
never loads training code or torch. The actor runs two threads: one streams the training's events,
the other takes `stop()`, which the trainer sees at its next step.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import ray

from deployments.finetune import FinetuneEvent, FinetuneExample, FinetuneParams


class TrainerHost:
    def __init__(self, worker_path: str):
        module, _, name = worker_path.partition(":")
        self.worker = getattr(importlib.import_module(module), name)()
        self.stopping = False

    def train(self, params: FinetuneParams, examples: list[FinetuneExample], resume: bytes | None):
        self.stopping = False
        yield from self.worker.train(params, examples, resume, should_stop=lambda: self.stopping)

    def stop(self) -> None:
        self.stopping = True


class TrainerLauncher:
    """Starts one TrainerHost actor per training attempt and kills it when the attempt ends."""

    def __init__(self, worker_path: str, num_gpus: float, num_cpus: float):
        self.worker_path = worker_path
        self.options = {"num_gpus": num_gpus, "num_cpus": num_cpus, "max_concurrency": 2}

    @asynccontextmanager
    async def session(self) -> AsyncIterator[TrainerSession]:
        actor = ray.remote(TrainerHost).options(**self.options).remote(self.worker_path)
        try:
            yield TrainerSession(actor)
        finally:
            ray.kill(actor, no_restart=True)


class TrainerSession:
    def __init__(self, actor):
        self.actor = actor

    async def events(
        self, params: FinetuneParams, examples: list[FinetuneExample], resume: bytes | None
    ) -> AsyncIterator[FinetuneEvent]:
        stream = self.actor.train.options(num_returns="streaming").remote(params, examples, resume)
        async for ref in stream:
            yield await ref

    async def stop(self) -> None:
        await self.actor.stop.remote()
