"""`flux-serve plan --gpus 1x24GB`: which parts fit where, at what GPU fraction, and what must
be offloaded to the CPU or loaded one after another (scale to zero), from real memory needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deployments.memory import Component, components
from deployments.registry import VariantSpec, spec_of

GPU_SPEC = re.compile(r"^(\d+)x(\d+(?:\.\d+)?)GB\Z", re.IGNORECASE)


class PlanError(ValueError):
    """A GPU list that cannot be read."""


@dataclass
class Gpu:
    index: int
    memory_gb: float
    parts: list[Component] = field(default_factory=list)

    @property
    def free_gb(self) -> float:
        return self.memory_gb - sum(part.memory_gb for part in self.parts)


@dataclass
class Plan:
    gpus: list[Gpu]
    on_cpu: list[Component]
    one_after_another: list[Component]
    does_not_fit: list[Component]


def parse_gpus(spec: str) -> list[Gpu]:
    gpus = []
    for group in spec.split(","):
        match = GPU_SPEC.match(group.strip())
        if not match:
            raise PlanError(f"GPU list {spec!r}: write it like 1x24GB or 2x80GB,1x24GB.")
        for _ in range(int(match.group(1))):
            gpus.append(Gpu(len(gpus), float(match.group(2))))
    return gpus


def make_plan(models: list[str | VariantSpec], gpu_spec: str) -> Plan:
    """Biggest first: each transformer (with its VAE) on the GPU with the most room; encoders
    fill what is left, else run on the CPU (they run once per prompt); a variant that finds no
    room beside the others shares a GPU by being loaded only when used (min_replicas 0)."""
    gpus = parse_gpus(gpu_spec)
    plan = Plan(gpus, [], [], [])
    denoisers, encoders = [], {}
    for model in models:
        transformer, vae, encoder = components(spec_of(model))
        denoisers.append((transformer, vae))
        encoders.setdefault(encoder.name, encoder)
    for transformer, vae in sorted(denoisers, key=lambda pair: -pair[0].memory_gb):
        need = transformer.memory_gb + vae.memory_gb
        best = max(gpus, key=lambda gpu: gpu.free_gb, default=None)
        if best is not None and best.free_gb >= need:
            best.parts += [transformer, vae]
        elif any(gpu.memory_gb >= need for gpu in gpus):
            plan.one_after_another += [transformer, vae]
        else:
            plan.does_not_fit += [transformer, vae]
    for encoder in sorted(encoders.values(), key=lambda part: -part.memory_gb):
        best = max(gpus, key=lambda gpu: gpu.free_gb, default=None)
        if best is not None and best.free_gb >= encoder.memory_gb:
            best.parts.append(encoder)
        else:
            plan.on_cpu.append(encoder)
    return plan


def render(plan: Plan) -> str:
    lines = ["| GPU | part | memory (GB, bf16 + working margin) | num_gpus |", "|---|---|---|---|"]
    for gpu in plan.gpus:
        for part in gpu.parts:
            lines.append(
                f"| {gpu.index} ({gpu.memory_gb:.0f} GB) | {part.name} | {part.memory_gb:.1f} | {part.memory_gb / gpu.memory_gb:.2f} |"
            )
        lines.append(f"| {gpu.index} | free | {gpu.free_gb:.1f} | |")
    for part in plan.on_cpu:
        lines.append(f"| CPU | {part.name} (offloaded: encodes once per prompt) | {part.memory_gb:.1f} | 0 |")
    for part in plan.one_after_another:
        lines.append(f"| shared | {part.name}: loaded only when used (min_replicas: 0) | {part.memory_gb:.1f} | |")
    for part in plan.does_not_fit:
        lines.append(
            f"| none | {part.name}: larger than any GPU here; use FP8 or a bigger GPU | {part.memory_gb:.1f} | |"
        )
    return "\n".join(lines)
