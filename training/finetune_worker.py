"""The finetune job's trainer: `FinetuneWorker.train` turns FinetuneParams and examples into a stream of events.

A plain class (the service wraps it with `ray.remote` as an actor with its own GPU fraction). It trains the way
diffusers' train_dreambooth_lora_flux2_klein.py does (training/finetune_run.py): latents and prompt embeddings
computed once, a LoRA on the attention and MLP projections, the flow-matching loss at the noise levels the
checkpoint's scheduler samples; on a CUDA GPU bf16, gradient checkpointing and 8-bit AdamW when bitsandbytes is
installed, on a CPU fp32. It reports every step, samples early and then every `sample_every` steps, checkpoints
every `checkpoint_every` steps, and ends with the adapter file, the strength it serves best at and what it did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from deployments.finetune import FinetuneEvent, FinetuneExample, FinetuneParams, FinetuneStopped
from deployments.loading import pick_device
from training.finetune_run import FinetuneRun

FIRST_SAMPLE_STEP = 10  # time to the first sample matters: the first one comes this early (or at sample_every)


def sample_steps(params: FinetuneParams) -> set[int]:
    """The steps after which a sample is drawn: FIRST_SAMPLE_STEP (or sooner), then every `sample_every`."""
    every = max(1, params.sample_every)
    return {min(every, FIRST_SAMPLE_STEP, params.iterations)} | set(range(every, params.iterations, every))


class FinetuneWorker:
    """One finetune at a time on one device (a CUDA GPU when there is one)."""

    def __init__(self, device: str | None = None):
        self.device = pick_device(device or "auto")

    def train(
        self,
        params: FinetuneParams,
        examples: list[FinetuneExample],
        resume: bytes | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[FinetuneEvent]:
        """Events in step order; the last one carries the adapter. With `resume` (a checkpoint's bytes) training
        continues from that checkpoint's step. Once `should_stop()` is true, `FinetuneStopped` is raised before
        the next step (its `step` is the last step done; the latest checkpoint event holds the state to resume)."""
        started = time.perf_counter()
        run = FinetuneRun(params, examples, self.device)
        first = run.restore(resume) if resume is not None else 0
        samples, loss = sample_steps(params), None
        for step in range(first, params.iterations):
            if should_stop is not None and should_stop():
                raise FinetuneStopped(step, params.iterations)
            loss = run.train_step(step)
            done = step + 1
            if done == params.iterations:
                break
            event = FinetuneEvent(done, params.iterations, loss)
            if done in samples:
                sample_png, sample_prompt = run.sample(done)
                event = replace(event, sample_png=sample_png, sample_prompt=sample_prompt)
                run.timings_s.setdefault("first_sample", round(time.perf_counter() - started, 2))
            if done % max(1, params.checkpoint_every) == 0:
                event = replace(event, checkpoint=run.checkpoint(done))
            yield event
        yield run.finish(started, loss)
