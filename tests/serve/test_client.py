"""flux_client against the shared Serve instance: the sync and async clients, and `flux-serve generate`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flux_client import AsyncFluxClient, FluxAPIError, FluxClient, JobFailed, JobUpdate
from tests.serve.conftest import API_KEY, MODELS

PROMPT = "a red circle on a blue background"
PNG_MAGIC = b"\x89PNG"
SLOW_JOB = {"width": 512, "height": 512, "steps": 30}  # long enough for progress events on the tiny models
LONG_JOB = {"width": 1024, "height": 1024, "steps": 40}


@pytest.mark.parametrize("use_events", [True, False], ids=["events-stream", "polling"])
def test_sync_client_submits_waits_with_progress_and_downloads(base_url, tmp_path, use_events):
    updates: list[JobUpdate] = []
    with FluxClient(base_url, API_KEY, use_events=use_events, poll_interval_s=0.1) as flux:
        job_id = flux.submit(PROMPT, num_images=2, seed=21, output_format="png", **SLOW_JOB)
        job = flux.wait(job_id, on_progress=updates.append, timeout_s=120)
        paths = flux.download(job, tmp_path / "out")
    assert job["status"] == "Ready" and job["seed"] == 21 and len(job["images"]) == 2
    assert [path.name for path in paths] == [f"{job_id}-0.png", f"{job_id}-1.png"]
    assert all(path.read_bytes().startswith(PNG_MAGIC) for path in paths)
    steps = [update.step for update in updates if update.step is not None]
    assert steps and steps == sorted(steps) and updates[-1].total == SLOW_JOB["steps"], updates
    assert all(update.job_id == job_id for update in updates)


def test_sync_client_history_usage_models_loras_and_cancel(base_url):
    with FluxClient(base_url, API_KEY) as flux:
        job_id = flux.submit(PROMPT, seed=3, **LONG_JOB)
        cancelled = flux.cancel(job_id)
        assert cancelled["id"] == job_id
        with pytest.raises(JobFailed) as failed:
            flux.wait(job_id, timeout_s=120)
        assert failed.value.status == "Cancelled" and "cancelled" in str(failed.value)
        assert job_id in [job["id"] for job in flux.history(limit=10)["jobs"]]
        assert flux.job(job_id)["status"] == "Cancelled"
        assert {model["id"] for model in flux.models() if model["served"]} == set(MODELS)
        assert isinstance(flux.loras(), list)
        assert "total" in flux.usage()


def test_errors_carry_the_apis_status_and_message(base_url):
    with FluxClient(base_url, "not-a-key") as flux, pytest.raises(FluxAPIError) as refused:
        flux.models()
    assert refused.value.status_code == 401
    assert refused.value.message.startswith("Missing or invalid API key")
    with FluxClient(base_url, API_KEY) as flux:
        with pytest.raises(FluxAPIError) as invalid:
            flux.submit(PROMPT, width=100, height=64)
        assert invalid.value.status_code == 422 and "width: " in invalid.value.message
        assert "multiple of 16" in invalid.value.message
        with pytest.raises(FluxAPIError) as unknown:
            flux.job("0" * 32)
        assert unknown.value.status_code == 404 and "No job" in unknown.value.message


def test_async_client_end_to_end(base_url, tmp_path):
    async def scenario():
        updates = []

        async def remember(update: JobUpdate) -> None:
            updates.append(update)

        async with AsyncFluxClient(base_url, API_KEY, poll_interval_s=0.1) as flux:
            job_id = await flux.submit(PROMPT, num_images=2, seed=8, output_format="png", **SLOW_JOB)
            job = await flux.wait(job_id, on_progress=remember, timeout_s=120)
            paths = await flux.download(job, tmp_path)
            doomed = await flux.submit(PROMPT, **LONG_JOB)
            await flux.cancel(doomed)
            with pytest.raises(JobFailed):
                await flux.wait(doomed, timeout_s=120)
            history = await flux.history(limit=10)
        assert len(paths) == 2 and all(path.read_bytes().startswith(PNG_MAGIC) for path in paths)
        assert updates and updates[-1].total == SLOW_JOB["steps"]
        assert {job_id, doomed} <= {job["id"] for job in history["jobs"]}

    asyncio.run(scenario())


def test_cli_generate_writes_four_files_and_prints_them_with_the_job_id(base_url, tmp_path):
    env = {**os.environ, "FLUX_API_URL": base_url, "FLUX_API_KEY": API_KEY}
    out = tmp_path / "images"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flux_client",
            "generate",
            PROMPT,
            "-n",
            "4",
            "--out",
            str(out),
            "--seed",
            "5",
            "--steps",
            "4",
            "--aspect-ratio",
            "1:1",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    files = sorted(out.iterdir())
    assert len(files) == 4 and all(path.stat().st_size > 0 for path in files)
    lines = done.stdout.splitlines()
    assert sorted(Path(line) for line in lines[:4]) == files
    assert lines[4].startswith("job ") and "(seed 5)" in lines[4]
    assert "step" in done.stderr, "a progress bar"


def test_cli_generate_with_a_bad_key_exits_non_zero_with_the_apis_message(base_url, tmp_path):
    """`flux-serve generate` hands over to `python -m flux_client generate` (exec: same exit code, same stderr)."""
    arguments = ["generate", PROMPT, "--url", base_url, "--key", "wrong-key", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "serve_apps.cli", *arguments], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "HTTP 401: Missing or invalid API key" in done.stderr
    assert not list(tmp_path.iterdir())


def run_cli(base_url: str, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLUX_API_URL": base_url, "FLUX_API_KEY": API_KEY}
    return subprocess.run(
        [sys.executable, "-m", "flux_client", "generate", *arguments],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_generate_with_an_image_edits_it_and_the_job_lists_one_reference(base_url, tmp_path):
    from PIL import Image

    source = tmp_path / "src.png"
    Image.new("RGB", (96, 64), (200, 30, 30)).save(source)
    out = tmp_path / "edited"
    done = run_cli(base_url, "make the background yellow", "--image", str(source), "--out", str(out), "--steps", "4")
    assert done.returncode == 0, done.stderr
    [written] = sorted(out.iterdir())
    *paths, summary = done.stdout.splitlines()
    assert [Path(line) for line in paths] == [written] and written.stat().st_size > 0
    job_id = summary.split()[1]
    with FluxClient(base_url, API_KEY) as flux:
        job = flux.job(job_id)
        [reference] = flux.reference_bytes(job)
    assert job["request"]["prompt"] == "make the background yellow" and len(job["references"]) == 1
    assert reference.startswith(PNG_MAGIC) and job["request"]["width"] / job["request"]["height"] == pytest.approx(
        96 / 64, rel=0.1
    ), "the output takes the photo's shape"


def test_cli_generate_with_a_missing_or_non_image_file_exits_non_zero_with_a_clear_message(base_url, tmp_path):
    out = tmp_path / "out"
    missing = run_cli(base_url, "make it green", "--image", str(tmp_path / "nope.png"), "--out", str(out))
    assert missing.returncode == 1
    assert f"--image {tmp_path / 'nope.png'}: no such file" in missing.stderr

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    refused = run_cli(base_url, "make it green", "--image", str(notes), "--out", str(out))
    assert refused.returncode == 1
    assert f"--image {notes}: file: is not an image (send PNG, JPEG or WebP)" in refused.stderr
    assert "HTTP 422" in refused.stderr and not out.exists()
