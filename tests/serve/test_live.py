"""The live channel on a cluster of one node (the shared Ray Serve instance) and on two processes.

Progress of a running job reaches the events stream through the channel's named actor, a cancel of a
running job stops it at its next step, and a second Python process connected to the same Ray reads a
cancel this one wrote and publishes progress this one is waiting for."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from deployments.progress import Progress
from flux_client.sse import EventParser
from serve_apps.live.ray_channel import ACTOR_NAME, NAMESPACE, RayChannel
from tests.serve.conftest import wait_for_job
from tests.serve.test_api import submit

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[2]
SLOW_JOB = {"width": 256, "height": 256, "steps": 40, "num_images": 2, "seed": 11}
LONG_JOB = {"width": 1024, "height": 1024, "steps": 40, "seed": 9}


def test_progress_of_a_running_job_arrives_through_the_channel_actor(client, serve_instance):
    import ray

    job_id = submit(client, prompt="a red circle on a blue background", **SLOW_JOB)["id"]
    parser, steps, names = EventParser(), [], []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as response:
        for line in response.iter_lines():
            event = parser.feed(line)
            if event:
                names.append(event.name)
                if event.name == "progress":
                    steps.append(event.data["step"])
                    assert event.data["total"] == SLOW_JOB["steps"]
    assert names[-1] == "done", names
    assert len(steps) >= 3 and steps == sorted(set(steps)), steps
    actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    progress = ray.get(actor.progress.remote(job_id), timeout=10)
    assert (progress.step, progress.of) == (SLOW_JOB["steps"], SLOW_JOB["steps"]) and progress.eta_s == 0.0
    assert ray.get(actor.cancelled_among.remote([job_id]), timeout=10) == {job_id}, "an ended job's workers stop"
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"] == {"step": 40, "total": 40, "eta_s": 0.0}


def test_a_cancel_of_a_running_job_stops_it_at_its_next_step(client):
    job_id = submit(client, prompt="a green square on a white background", **LONG_JOB)["id"]
    parser, seen = EventParser(), []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as response:
        for line in response.iter_lines():
            event = parser.feed(line)
            if event and event.name == "progress":
                seen.append(event.data["step"])
                if len(seen) == 1:
                    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
            if event and event.name in ("done", "error"):
                last = event
    assert last.name == "error" and last.data["status"] == "Cancelled", last.data
    assert last.data["images"] == [] and last.data["error"] == "cancelled by the user"
    stopped_at = last.data["progress"]["step"]
    assert stopped_at < LONG_JOB["steps"], f"stopped at step {stopped_at}, before the last"
    assert wait_for_job(client, job_id)["status"] == "Error", "BFL clients see an error and stop polling"


SECOND_PROCESS = """
import json, sys
import ray
from deployments.progress import Progress
from serve_apps.live.ray_channel import RayChannel

address, name, cancelled, running = sys.argv[1:5]
ray.init(address=address, log_to_driver=False)
channel = RayChannel(name)
answer = channel.ask_cancelled([cancelled, running]).result(timeout=60)
channel.send(Progress(running, 3, 8, eta_s=2.5))
ray.get(channel.actor().version.remote(running), timeout=60)  # the send has been handled
print(json.dumps(sorted(answer)))
"""


def test_two_processes_share_one_channel_actor(serve_instance):
    """This process writes a cancel and waits on a job; a second process connected to the same Ray
    reads the cancel and publishes the job's progress, which wakes the wait."""
    import ray

    name = f"flux-live-test-{uuid.uuid4().hex[:8]}"
    channel = RayChannel(name)
    cancelled, running = uuid.uuid4().hex, uuid.uuid4().hex

    async def scenario() -> tuple[list[str], Progress | None, int]:
        await channel.request_cancel(cancelled)
        waiting = asyncio.create_task(channel.wait_for_change(running, 0, 120))
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(SECOND_PROCESS),
            ray.get_runtime_context().gcs_address,
            name,
            cancelled,
            running,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 0, err.decode()[-3000:]
        version = await asyncio.wait_for(waiting, 10)
        return json.loads(out.decode().strip().splitlines()[-1]), await channel.progress(running), version

    try:
        answer, progress, version = asyncio.run(scenario())
    finally:
        ray.kill(channel.actor())
    assert answer == [cancelled], "the second process read the cancel this one wrote"
    assert version > 0 and (progress.job_id, progress.step, progress.of, progress.eta_s) == (running, 3, 8, 2.5)


def test_a_restarted_channel_actor_is_found_again_by_name(serve_instance):
    """Killed with its state (as with its node), Ray restarts it; replicas' handles reach the new one."""
    import ray

    name = f"flux-live-test-{uuid.uuid4().hex[:8]}"
    channel, job_id = RayChannel(name), uuid.uuid4().hex

    async def scenario():
        await channel.publish(Progress(job_id, 1, 4))
        before = await channel.version(job_id)
        ray.kill(channel.actor(), no_restart=False)
        for _ in range(100):
            if await channel.progress(job_id) is None and await channel.version(job_id) == 0:
                break  # the restarted actor answers, with nothing of what was lost
            await asyncio.sleep(0.1)
        await channel.publish(Progress(job_id, 2, 4))
        return before, await channel.version(job_id), (await channel.progress(job_id)).step

    try:
        before, after, step = asyncio.run(scenario())
    finally:
        ray.kill(channel.actor())
    assert step == 2 and after > before, "versions of the restarted actor are above the lost ones"


def test_the_service_reads_progress_over_http_while_a_job_runs(client):
    job_id = submit(client, prompt="a blue triangle on a black background", **SLOW_JOB)["id"]
    seen = set()
    for _ in range(600):
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"]:
            seen.add(job["progress"]["step"])
        bfl = client.get("/v1/get_result", params={"id": job_id}).json()
        if job["status"] != "Pending":
            break
        assert 0.0 <= bfl["progress"] <= 1.0
        time.sleep(0.05)
    assert job["status"] == "Ready" and len(seen) >= 2, seen
