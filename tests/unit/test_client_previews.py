"""The client's view of step previews: events and polls carry them, the CLI's --previews saves each once."""

from __future__ import annotations

import argparse
import base64
import json

import httpx

from flux_client import FluxClient, JobUpdate
from flux_client.cli import PreviewSaver, add_generate_arguments

JOB_ID = "b" * 32
JPEG = b"\xff\xd8\xff\xe0 a tiny jpeg"


def preview(step: int, data: bytes = JPEG) -> dict:
    return {"step": step, "image": "data:image/jpeg;base64," + base64.b64encode(data).decode()}


def test_a_preview_comes_as_step_and_bytes_and_a_broken_one_as_nothing():
    assert JobUpdate(JOB_ID, preview=preview(3)).preview_image() == (3, JPEG)
    for broken in (None, {"step": 1}, {"step": 1, "image": "no comma"}, {"step": "x", "image": "a,AAAA"}, "text"):
        assert JobUpdate(JOB_ID, preview=broken).preview_image() is None
    polled = {"id": JOB_ID, "status": "Pending", "progress": {"step": 4, "total": 8}, "preview": preview(4)}
    assert JobUpdate.from_job(polled).preview_image() == (4, JPEG)


def test_the_cli_saves_each_preview_of_the_events_stream_once(tmp_path):
    done = {"id": JOB_ID, "status": "Ready", "seed": 1, "images": [], "error": None}
    events = [
        ("progress", {"step": 1, "total": 3}),
        ("progress", {"step": 2, "total": 3, "preview": preview(2)}),
        ("progress", {"step": 3, "total": 3, "preview": preview(2)}),
        ("done", done),
    ]
    stream = "".join(f"id: {i}\nevent: {name}\ndata: {json.dumps(data)}\n\n" for i, (name, data) in enumerate(events))

    def handler(request):
        return httpx.Response(200, content=stream.encode(), headers={"content-type": "text/event-stream"})

    updates = []
    with FluxClient("http://flux.test", "k", transport=httpx.MockTransport(handler)) as flux:
        flux.wait(JOB_ID, on_progress=PreviewSaver(tmp_path, updates.append))
    assert [update.step for update in updates] == [1, 2, 3], "the bar still gets every update"
    assert [path.name for path in tmp_path.iterdir()] == [f"{JOB_ID}-step-2.jpg"]
    assert (tmp_path / f"{JOB_ID}-step-2.jpg").read_bytes() == JPEG


def test_generate_takes_a_previews_folder():
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    options = parser.parse_args(["a cat", "--previews", "frames"])
    assert str(options.previews) == "frames"
