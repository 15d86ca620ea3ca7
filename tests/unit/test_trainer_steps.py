"""The trainers run through the step hook: Progress after every optimizer step, an ETA, cancel at the
next step, the command line's bar as one observer among others. No Ray; tiny models on the CPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from deployments.progress import Cancelled, Progress
from lora.adapter_file import ADAPTER_FILENAME, inspect_adapter
from tests.unit.test_lora import MODEL, write_red_dataset
from training import loop
from training.cli import main as flux_lora
from training.lora_trainer import LoraTrainingConfig, train_lora
from training.shapes_model import TrainingConfig
from training.shapes_model import train as train_shapes


class Recorder:
    """A job's observer: keeps what it is told, and asks to stop once it has seen step `cancel_at`."""

    def __init__(self, cancel_at: int | None = None):
        self.seen: list[Progress] = []
        self.cancel_at = cancel_at
        self.asked: list[str] = []

    def on_step(self, progress: Progress) -> None:
        self.seen.append(progress)

    def cancel_requested(self, job_id: str) -> bool:
        self.asked.append(job_id)
        return self.cancel_at is not None and max((p.step for p in self.seen), default=0) >= self.cancel_at


@pytest.fixture(scope="module")
def red_data(tmp_path_factory) -> Path:
    return write_red_dataset(tmp_path_factory.mktemp("red-data"), count=4)


def lora_config(data: Path, out: Path, steps: int = 4, **options) -> LoraTrainingConfig:
    return LoraTrainingConfig(
        model=MODEL,
        data=data,
        out=out,
        trigger_word="redstyle",
        weights="emulated:tiny",
        steps=steps,
        batch_size=2,
        device="cpu",
        **options,
    )


def test_lora_trainer_reports_every_step_in_order_with_an_eta(red_data, tmp_path):
    recorder = Recorder()
    result = train_lora(lora_config(red_data, tmp_path / "out"), show_progress=False, observer=recorder, job_id="ft-1")
    assert [p.step for p in recorder.seen] == [1, 2, 3, 4] and {p.of for p in recorder.seen} == {4}
    assert {p.job_id for p in recorder.seen} == {"ft-1"} and set(recorder.asked) == {"ft-1"}
    assert all(p.eta_s is not None and p.eta_s >= 0 for p in recorder.seen), "an ETA from the first step on"
    assert recorder.seen[-1].eta_s == 0 and all(p.updated_at > 0 for p in recorder.seen)
    assert len(result.losses) == 4 and result.adapter_path.exists()


def test_cancel_at_step_k_stops_there_and_writes_no_adapter(red_data, tmp_path):
    recorder, out = Recorder(cancel_at=2), tmp_path / "out"
    with pytest.raises(Cancelled, match="ft-2 stopped on request after step 2 of 6"):
        train_lora(lora_config(red_data, out, steps=6), show_progress=False, observer=recorder, job_id="ft-2")
    assert [p.step for p in recorder.seen] == [1, 2]
    assert not (out / ADAPTER_FILENAME).exists() and list(tmp_path.iterdir()) == [], "no file, no staging folder"


def test_adapter_learns_in_fp32_over_a_bf16_base(red_data, tmp_path):
    """The GPU's mixed precision (bf16 base, as the denoiser loads it there), tried on the CPU: the saved
    adapter is the same file as an fp32 run's, tensor for tensor in name, shape and dtype."""
    bf16 = train_lora(lora_config(red_data, tmp_path / "bf16", steps=2, dtype="bfloat16"), show_progress=False)
    fp32 = train_lora(lora_config(red_data, tmp_path / "fp32", steps=2), show_progress=False)
    from safetensors import safe_open

    def layout(path: Path) -> dict:
        with safe_open(str(path), framework="pt") as handle:
            return {key: (handle.get_tensor(key).dtype, handle.get_tensor(key).shape) for key in handle.keys()}

    assert layout(bf16.adapter_path) == layout(fp32.adapter_path)
    assert {dtype for dtype, _ in layout(bf16.adapter_path).values()} == {torch.float32}
    assert inspect_adapter(bf16.adapter_path).metadata["training"]["dtype"] == "bfloat16"


def test_flux_lora_train_shows_its_bar(red_data, tmp_path, capsys):
    out = tmp_path / "cli"
    flux_lora(
        ["train", "--model", MODEL, "--data", str(red_data), "--out", str(out), "--trigger-word", "redstyle"]
        + ["--weights", "emulated:tiny", "--steps", "2", "--batch-size", "2", "--device", "cpu"]
    )
    printed = capsys.readouterr()
    assert "LoRA redstyle" in printed.err and "2/2" in printed.err, printed.err
    assert f"adapter: {out / ADAPTER_FILENAME}" in printed.out


def test_run_steps_eta_from_measured_seconds_per_step(monkeypatch):
    ticks = iter([100.0, 102.0, 104.0, 106.0])  # the start, then 2 s per step
    monkeypatch.setattr(loop, "time", SimpleNamespace(monotonic=lambda: next(ticks), time=lambda: 1.5e9))
    recorder, done = Recorder(), []
    loop.run_steps(3, done.append, recorder, "job")
    assert done == [0, 1, 2]
    assert [(p.step, p.of, p.eta_s, p.updated_at) for p in recorder.seen] == [
        (1, 3, 4.0, 1.5e9),
        (2, 3, 2.0, 1.5e9),
        (3, 3, 0.0, 1.5e9),
    ]


def test_run_steps_fans_out_and_any_observer_may_stop_it():
    quiet, stopping, done = Recorder(), Recorder(cancel_at=1), []
    with pytest.raises(Cancelled):
        loop.run_steps(5, done.append, loop.Observers(quiet, None, stopping), "job")
    assert done == [0] and [p.step for p in quiet.seen] == [1]
    already = Recorder(cancel_at=0)
    with pytest.raises(Cancelled, match="after step 0 of 5"):
        loop.run_steps(5, done.append, already, "job")
    assert done == [0], "a job cancelled before its first step takes none"


def test_schedule_is_warmup_then_cosine_to_a_floor():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    schedule = loop.warmup_cosine_schedule(optimizer, total=10, warmup=2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:3] == [1.0, 2.0, 2.0] and rates[-1] == pytest.approx(2.0 * (0.05 + 0.95 * 0.5 * (1 - 0.9239)), 1e-3)
    assert rates == [2.0 * loop.cosine_with_warmup(step, 10, 2) for step in range(10)]


def test_shapes_trainer_reports_each_phase_and_stops_when_asked(tmp_path):
    """VAE then transformer, each phase its own steps; a cancel in the transformer phase saves nothing."""
    recorder = Recorder()
    recorder.cancel_requested = lambda job_id: [(p.step, p.of) for p in recorder.seen][-1:] == [(2, 3)]
    config = TrainingConfig(images=16, vae_steps=1, vae_batch=2, transformer_steps=3, transformer_batch=2)
    with pytest.raises(Cancelled):
        train_shapes(tmp_path / "shapes", config, observer=recorder, job_id="shapes")
    assert [(p.step, p.of) for p in recorder.seen] == [(1, 1), (1, 3), (2, 3)]
    assert not (tmp_path / "shapes").exists()
