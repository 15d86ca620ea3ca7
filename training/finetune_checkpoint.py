"""A finetune's checkpoint as bytes: the adapter, the optimizer and schedule, the step, and every random state.

The job stores the bytes it is given; a trainer that was killed is started again with them and continues from
their step, drawing the same batches and noise it would have drawn (every draw comes from one generator), so a resumed run ends with the adapter an
uninterrupted one ends with (bit for bit on a CPU).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch

from deployments.finetune import FinetuneParams

FORMAT = "flux-serve-finetune-checkpoint/1"


class CheckpointMismatch(ValueError):
    """Checkpoint bytes that belong to another finetune or another trainer."""


@dataclass
class TrainingState:
    step: int
    lora: dict[str, torch.Tensor]
    optimizer: dict
    schedule: dict
    noise_generator: torch.Tensor


def identity(params: FinetuneParams) -> dict:
    """What a checkpoint must agree on with the run that resumes it: the same finetune, base and adapter shape."""
    return {
        "finetune_id": params.finetune_id,
        "base_variant": params.base_variant,
        "weights": params.weights,
        "rank": params.rank,
        "mode": params.mode,
        "iterations": params.iterations,
    }


def pack(params: FinetuneParams, state: TrainingState) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "identity": identity(params),
            "step": state.step,
            "lora": {name: tensor.detach().cpu().clone() for name, tensor in state.lora.items()},
            "optimizer": state.optimizer,
            "schedule": state.schedule,
            "noise_generator": state.noise_generator,
        },
        buffer,
    )
    return buffer.getvalue()


def unpack(params: FinetuneParams, data: bytes) -> TrainingState:
    """The state in `data`, checked against `params`; a mismatch names what differs."""
    try:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for bytes that are no checkpoint
        raise CheckpointMismatch(f"resume bytes are not a finetune checkpoint ({type(error).__name__}).") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise CheckpointMismatch(f"resume bytes are not a {FORMAT} checkpoint; pass the bytes a FinetuneEvent carried.")
    expected = identity(params)
    differing = sorted(key for key in expected if saved["identity"].get(key) != expected[key])
    if differing:
        found = {key: saved["identity"].get(key) for key in differing}
        wanted = {key: expected[key] for key in differing}
        raise CheckpointMismatch(f"the checkpoint was made by another finetune: it has {found}, this run {wanted}.")
    return TrainingState(
        step=int(saved["step"]),
        lora=saved["lora"],
        optimizer=saved["optimizer"],
        schedule=saved["schedule"],
        noise_generator=saved["noise_generator"],
    )
