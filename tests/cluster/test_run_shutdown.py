"""`flux-serve run`, started as the README starts it and stopped with SIGTERM, exits 0 and leaves no process behind,
whether the signal comes while it is still starting (it used to abort there: SIGABRT, exit 134) or once it is up;
the job it was running is finished by the next start.

Its own Ray (its own temp folder, ports and data), so it never meets the shared Serve instance of tests/serve."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
FLUX_SERVE = Path(sys.executable).parent / "flux-serve"
KEY = "run-shutdown-test-key"
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 90  # a denoiser finishes the call in hand first (Serve's graceful_shutdown_timeout_s, 20 s)
JOB_TIMEOUT_S = 120
JOB = {"prompt": "a red circle on a blue background", "width": 512, "height": 512, "steps": 20}


class Service:
    """One `flux-serve run` in `folder` (its serve_config.yaml, data and Ray temp folder)."""

    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.base = f"http://127.0.0.1:{port}"
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self.env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
        self.env.update(
            FLUX_API_KEYS=KEY,
            FLUX_SERVE_KEY_FILE=str(folder / "api-key"),
            RAY_TMPDIR=str(folder / "ray"),  # short: Ray's socket paths must fit in 107 bytes
            RAY_USAGE_STATS_ENABLED="0",
        )

    @property
    def log_path(self) -> Path:
        return self.folder / f"run-{self.starts}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> None:
        """`.venv/bin/flux-serve run` in the project folder, as the README says; returns once /ping answers."""
        self.starts += 1
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(FLUX_SERVE), "run"],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"flux-serve run exited {self.process.returncode}:\n{self.log()[-3000:]}"
            )
            try:
                if httpx.get(f"{self.base}/ping", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"flux-serve run did not answer /ping in {START_TIMEOUT_S} s:\n{self.log()[-3000:]}")

    def wait_until_up(self) -> None:
        """Until it printed its banner: serve.run has returned and the driver only waits for a signal."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while "flux-serve is up" not in self.log():
            assert time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.5)

    def stop(self, impatient: bool = False) -> int:
        self.process.send_signal(signal.SIGTERM)
        if impatient:  # a second SIGTERM while it stops must change nothing
            time.sleep(2)
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"flux-serve run still runs {STOP_TIMEOUT_S} s after SIGTERM:\n{self.log()[-3000:]}")

    def leftovers(self) -> list[int]:
        """Processes of this service still alive: Ray's name the temp folder or run in the project folder."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                in_folder = os.readlink(entry / "cwd").startswith(str(self.folder))
                in_folder = in_folder or str(self.folder).encode() in (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if in_folder:
                found.append(int(entry.name))
        return found

    def kill_everything(self) -> None:
        """What a failed test left running: SIGTERM, then SIGKILL, by process id."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.leftovers():
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            time.sleep(3)

    def job(self, job_id: str) -> dict:
        response = httpx.get(f"{self.base}/v1/jobs/{job_id}", headers={"x-key": KEY}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def service() -> Iterator[Service]:
    folder = Path(tempfile.mkdtemp(prefix="fsrun", dir="/tmp"))
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["storage_url"] = str(folder / "data")
    args.pop("keys_file", None)
    args["jobs"].update(heartbeat_s=1, stale_after_s=5)  # the restart adopts the job seconds after it starts
    (folder / "serve_config.yaml").write_text(yaml.safe_dump(config))
    running = Service(folder, port)
    try:
        yield running
    finally:
        running.kill_everything()
        shutil.rmtree(folder, ignore_errors=True)


def assert_stopped_cleanly(service: Service, exit_code: int) -> None:
    log = service.log()
    assert exit_code == 0, f"SIGTERM ended flux-serve run with {exit_code} (-6 = SIGABRT):\n{log[-3000:]}"
    assert "flux-serve stopped." in log
    deadline = time.monotonic() + 10
    while service.leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert service.leftovers() == [], "every process of the service ends with it"


def test_sigterm_stops_flux_serve_run_with_exit_0_and_the_next_start_finishes_its_job(service):
    service.start()
    submitted = httpx.post(f"{service.base}/v1/flux-2-klein-4b", headers={"x-key": KEY}, json=JOB, timeout=30)
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["id"]
    # The ingress answers before the denoisers are ready: this SIGTERM comes while serve.run still waits for them
    # (the moment a stop used to abort), with the job in flight.
    still_starting = "flux-serve is up" not in service.log()
    exit_code = service.stop(impatient=True)
    print(f"first stop, while {'starting' if still_starting else 'up'}: exit {exit_code}")
    assert_stopped_cleanly(service, exit_code)

    service.start()
    service.wait_until_up()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (job := service.job(job_id))["status"] == "Pending":
        assert time.monotonic() < deadline, f"job still Pending {JOB_TIMEOUT_S} s after the restart: {job}"
        time.sleep(1)
    assert job["status"] == "Ready", job
    assert_stopped_cleanly(service, service.stop())
