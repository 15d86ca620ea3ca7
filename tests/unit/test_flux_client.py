"""flux_client without a server: error mapping, the events stream and its fallbacks (httpx.MockTransport).
No Ray here; the CLI and bot options are in test_client_options.py."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from flux_client import AsyncFluxClient, FluxAPIError, FluxClient, FluxConnectionError, JobFailed, JobUpdate
from flux_client.errors import error_message
from flux_client.sse import EventParser

JOB_ID = "a" * 32
MODELS = ["flux-2-klein-4b", "flux-2-klein-9b"]


def job(status: str = "Ready", **fields) -> dict:
    return {
        "id": JOB_ID,
        "model": MODELS[0],
        "status": status,
        "stage": "done",
        "seed": 7,
        "error": None,
        "images": [f"http://flux.test/v1/images/{JOB_ID}/0.png?exp=1&sig=x"],
        **fields,
    }


def sse(*events: tuple[str, dict]) -> bytes:
    return "".join(f"id: {i}\nevent: {name}\ndata: {json.dumps(data)}\n\n" for i, (name, data) in enumerate(events))


def client(handler, **options) -> FluxClient:
    return FluxClient("http://flux.test", "k", transport=httpx.MockTransport(handler), poll_interval_s=0, **options)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"detail": "Missing or invalid API key"}, "Missing or invalid API key"),
        (
            {
                "detail": [
                    {"loc": ["body", "width"], "msg": "must be a multiple of 16, e.g. 96"},
                    {"loc": ["body"], "msg": "give either aspect_ratio or width/height, not both"},
                ]
            },
            "width: must be a multiple of 16, e.g. 96; give either aspect_ratio or width/height, not both",
        ),
        ({"error": {"message": "size: must be a multiple of 16", "code": 422}}, "size: must be a multiple of 16"),
    ],
    ids=["fastapi-text", "pydantic-list", "openai"],
)
def test_error_message_reads_every_api_error_shape(body, message):
    assert error_message(httpx.Response(422, json=body)) == message


def test_error_message_of_a_non_json_body_is_its_text_or_reason():
    assert error_message(httpx.Response(502, text="upstream down")) == "upstream down"
    assert error_message(httpx.Response(503)) == "Service Unavailable"


def test_api_errors_raise_with_status_message_and_retry_after():
    def handler(request):
        return httpx.Response(429, json={"detail": "Too many requests: 8 jobs"}, headers={"Retry-After": "3"})

    with client(handler) as flux, pytest.raises(FluxAPIError) as raised:
        flux.submit("x")
    assert (raised.value.status_code, raised.value.message, raised.value.retry_after_s) == (
        429,
        "Too many requests: 8 jobs",
        3.0,
    )
    assert str(raised.value) == "HTTP 429: Too many requests: 8 jobs"


def test_an_unreachable_service_raises_a_connection_error_naming_the_url():
    def handler(request):
        raise httpx.ConnectError("connection refused")

    with (
        client(handler) as flux,
        pytest.raises(FluxConnectionError, match="cannot reach the flux-serve API at http://flux.test"),
    ):
        flux.models()


# -- submit ---------------------------------------------------------------------------------


def test_submit_sends_the_key_the_fields_given_loras_and_input_images(tmp_path):
    seen = {}

    def handler(request):
        seen.update(path=request.url.path, key=request.headers.get("x-key"), body=json.loads(request.content))
        return httpx.Response(200, json={"id": JOB_ID, "polling_url": "u"})

    photo = tmp_path / "in.png"
    photo.write_bytes(b"png bytes")
    with client(handler) as flux:
        assert (
            flux.submit(
                "a fox",
                "flux-2-klein-9b",
                num_images=4,
                seed=7,
                loras=[("style", 0.8)],
                images=[photo, b"raw", "https://example.com/a.png"],
            )
            == JOB_ID
        )
    assert seen["path"] == "/v1/flux-2-klein-9b" and seen["key"] == "k"
    body = seen["body"]
    assert body["num_images"] == 4 and body["seed"] == 7 and "width" not in body, "unset fields: server defaults"
    assert body["loras"] == [{"id": "style", "scale": 0.8}]
    assert base64.b64decode(body["input_image"]) == b"png bytes" and base64.b64decode(body["input_image_2"]) == b"raw"
    assert body["input_image_3"] == "https://example.com/a.png"


def test_submit_refuses_a_missing_input_image_file_before_sending(tmp_path):
    with client(lambda request: pytest.fail("nothing should be sent")) as flux, pytest.raises(FileNotFoundError):
        flux.submit("x", images=[tmp_path / "missing.png"])


UPLOAD_ID = "upload_" + "b" * 32


def test_upload_posts_the_file_as_multipart_and_its_id_works_as_an_input_image(tmp_path):
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path == "/v1/uploads":
            return httpx.Response(200, json={"id": UPLOAD_ID, "width": 8, "height": 8, "sha256": "s"})
        return httpx.Response(200, json={"id": JOB_ID, "polling_url": "u"})

    photo = tmp_path / "photo.png"
    photo.write_bytes(b"png bytes")
    with client(handler) as flux:
        assert flux.upload(photo) == UPLOAD_ID and flux.upload(b"raw bytes") == UPLOAD_ID
        flux.submit("make the background yellow", images=[UPLOAD_ID])
    first, second, submitted = seen
    assert first.headers["x-key"] == "k" and first.headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"; filename="photo.png"' in first.content and b"png bytes" in first.content
    assert b"raw bytes" in second.content
    assert json.loads(submitted.content)["input_image"] == UPLOAD_ID, "an upload id is sent as it is"


def test_upload_refuses_a_missing_file_or_a_url_before_sending_and_raises_the_apis_refusal(tmp_path):
    def handler(request):
        return httpx.Response(
            422, json={"detail": [{"loc": ["body", "file"], "msg": "is not an image (send PNG, JPEG or WebP)."}]}
        )

    with client(handler) as flux:
        with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
            flux.upload(tmp_path / "missing.png")
        with pytest.raises(ValueError, match="not a URL"):
            flux.upload("https://example.com/a.png")
        with pytest.raises(FluxAPIError, match="file: is not an image"):
            flux.upload(b"text")


def test_async_upload_and_reference_bytes():
    reference = "http://flux.test/v1/references/abc.png?exp=1&sig=x"

    def handler(request):
        if request.url.path == "/v1/uploads":
            return httpx.Response(200, json={"id": UPLOAD_ID, "width": 8, "height": 8, "sha256": "s"})
        assert "x-key" not in request.headers, "references are signed URLs"
        return httpx.Response(200, content=b"\x89PNG ref")

    async def scenario():
        async with AsyncFluxClient("http://flux.test", "k", transport=httpx.MockTransport(handler)) as flux:
            return await flux.upload(b"raw"), await flux.reference_bytes(job(references=[reference]))

    assert asyncio.run(scenario()) == (UPLOAD_ID, [b"\x89PNG ref"])
    with client(handler) as flux:
        assert flux.reference_bytes(job(references=[reference])) == [b"\x89PNG ref"]
        assert flux.reference_bytes(job()) == [], "a job without input images"


# -- wait: events stream, polling, fallbacks --------------------------------------------------


def test_wait_follows_the_events_stream_and_reports_each_update():
    stream = sse(
        ("queued", {"queue_position": 1}),
        ("progress", {"step": 1, "total": 2}),
        ("preview", {"image": "..."}),
        ("progress", {"step": 2, "total": 2}),
        ("done", job()),
    )

    def handler(request):
        assert request.url.path == f"/v1/jobs/{JOB_ID}/events"
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    updates = []
    with client(handler) as flux:
        assert flux.wait(JOB_ID, on_progress=updates.append)["status"] == "Ready"
    assert [update.describe() for update in updates] == ["queued, position 2", "step 1/2", "step 2/2"]


def test_wait_raises_job_failed_with_the_final_job_from_an_error_event():
    cancelled = job("Cancelled", images=[], error="cancelled by the user")

    def handler(request):
        return httpx.Response(200, content=sse(("error", cancelled)), headers={"content-type": "text/event-stream"})

    with client(handler) as flux, pytest.raises(JobFailed, match="ended Cancelled: cancelled by the user") as failed:
        flux.wait(JOB_ID)
    assert failed.value.job == cancelled


def polling_server(events_answer: httpx.Response | Exception):
    """A server whose events route gives `events_answer`; GET /v1/jobs/{id} is Pending twice, then Ready."""
    polls = []

    def handler(request):
        if request.url.path.endswith("/events"):
            if isinstance(events_answer, Exception):
                raise events_answer
            return events_answer
        polls.append(request)
        progress = {"step": len(polls), "total": 2}
        return httpx.Response(
            200, json=job() if len(polls) > 2 else job("Pending", stage="denoising", progress=progress)
        )

    return handler, polls


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    "events_answer",
    [
        lambda: httpx.Response(404, json={"detail": "Not Found"}),
        lambda: httpx.Response(405),
        lambda: httpx.ReadError("stream broke"),
        lambda: httpx.Response(
            200, content=sse(("queued", {"queue_position": 0})), headers={"content-type": "text/event-stream"}
        ),
    ],
    ids=["no-route-404", "no-route-405", "broken", "ended-early"],
)
def test_wait_falls_back_to_polling(events_answer, asynchronous):
    handler, polls = polling_server(events_answer())
    updates = []
    if asynchronous:

        async def scenario():
            transport = httpx.MockTransport(handler)
            async with AsyncFluxClient("http://flux.test", "k", transport=transport, poll_interval_s=0) as flux:
                return await flux.wait(JOB_ID, on_progress=updates.append)

        assert asyncio.run(scenario())["status"] == "Ready"
    else:
        with client(handler) as flux:
            assert flux.wait(JOB_ID, on_progress=updates.append)["status"] == "Ready"
    assert len(polls) == 3
    assert [u.describe() for u in updates if u.step] == ["step 1/2", "step 2/2"]


def test_polling_rides_out_a_short_outage_but_not_a_long_one():
    calls = []

    def flaky(request):
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("restarting")
        return httpx.Response(200, json=job())

    with client(flaky, use_events=False, max_unreachable_s=60) as flux:
        assert flux.wait(JOB_ID)["status"] == "Ready"

    def down(request):
        raise httpx.ConnectError("down")

    with client(down, use_events=False, max_unreachable_s=0) as flux, pytest.raises(FluxConnectionError):
        flux.wait(JOB_ID)


def test_wait_gives_up_after_timeout_s_with_a_hint():
    pending = client(lambda r: httpx.Response(200, json=job("Pending")), use_events=False)
    with pending as flux, pytest.raises(TimeoutError, match="longer timeout_s or cancel it"):
        flux.wait(JOB_ID, timeout_s=0.05)


def test_download_uses_the_signed_urls_without_sending_the_key(tmp_path):
    def handler(request):
        assert "x-key" not in request.headers, "a signed URL needs no key; the key never leaves for it"
        return httpx.Response(200, content=b"\x89PNG...")

    with client(handler) as flux:
        [path] = flux.download(job(), tmp_path / "new")
    assert path == tmp_path / "new" / f"{JOB_ID}-0.png" and path.read_bytes() == b"\x89PNG..."


def test_async_client_follows_events_with_an_async_callback_and_maps_errors():
    stream = sse(("progress", {"step": 1, "total": 1}), ("done", job()))

    def handler(request):
        if request.url.path == "/v1/models":
            return httpx.Response(401, json={"detail": "Missing or invalid API key"})
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    async def scenario():
        updates = []

        async def remember(update):
            updates.append(update)

        async with AsyncFluxClient("http://flux.test", "k", transport=httpx.MockTransport(handler)) as flux:
            assert (await flux.wait(JOB_ID, on_progress=remember))["status"] == "Ready"
            with pytest.raises(FluxAPIError, match="HTTP 401: Missing or invalid API key"):
                await flux.models()
        return updates

    assert [u.describe() for u in asyncio.run(scenario())] == ["step 1/1"]


# -- pieces -------------------------------------------------------------------------------------


def test_event_parser_joins_data_lines_skips_comments_and_keeps_ids():
    parser = EventParser()
    lines = [": keep-alive", "", "event: progress", "id: 7", 'data: {"step": 1,', 'data: "total": 4}', ""]
    events = [event for event in map(parser.feed, lines) if event]
    assert len(events) == 1
    assert (events[0].name, events[0].id, events[0].data) == ("progress", "7", {"step": 1, "total": 4})


def test_job_update_describes_queue_steps_and_the_end():
    assert JobUpdate(JOB_ID, queue_position=0).describe() == "queued"
    assert JobUpdate(JOB_ID, queue_position=1).describe() == "queued, position 2"
    assert JobUpdate(JOB_ID, stage="encoding").describe() == "encoding"
    assert JobUpdate(JOB_ID, stage="denoising", step=5, total=16).describe() == "step 5/16"
    assert JobUpdate.from_job(job()).describe() == "done"
