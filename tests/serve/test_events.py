"""The job events stream (SSE), the studio page and offline /docs, over real HTTP."""

from __future__ import annotations

import re
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx
import pytest

from flux_client.sse import EventParser
from tests.serve.conftest import SECOND_KEY
from tests.serve.test_api import submit

pytestmark = pytest.mark.serve

SLOW_JOB = {"width": 256, "height": 256, "steps": 24, "num_images": 2, "seed": 5}


def read_events(client: httpx.Client, url: str, headers: dict | None = None) -> list:
    """Every event of one stream, until the server closes it."""
    parser, events = EventParser(), []
    with client.stream("GET", url, headers=headers, timeout=120) as response:
        assert response.status_code == HTTPStatus.OK, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            event = parser.feed(line)
            if event:
                events.append(event)
    return events


def without_signatures(job: dict) -> dict:
    """The job with its image URLs cut at the query: signing at another second changes exp and sig."""
    return {**job, "images": [url.split("?")[0] for url in job["images"]]}


def test_events_follow_a_job_to_done_which_is_the_job_as_get_shows_it(client):
    job_id = submit(client, prompt="a red circle on a blue background", **SLOW_JOB)["id"]
    events = read_events(client, f"/v1/jobs/{job_id}/events")
    names = [event.name for event in events]
    assert names[-1] == "done" and names.count("done") == 1, names
    assert "progress" in names, names
    ids = [int(event.id) for event in events]
    assert ids == sorted(set(ids)), "ids grow strictly"
    progress = [event.data for event in events if event.name == "progress"]
    assert all(set(item) - {"preview"} == {"step", "total", "eta_s"} for item in progress), "a preview when new"
    assert all(item["total"] == SLOW_JOB["steps"] for item in progress)
    etas = [item["eta_s"] for item in progress]
    assert all(eta is not None and eta >= 0 for eta in etas) and etas[-1] < etas[0], f"an ETA that counts down: {etas}"
    assert [item["step"] for item in progress] == sorted({item["step"] for item in progress}), "only changes are sent"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert without_signatures(events[-1].data) == without_signatures(job)
    assert len(job["images"]) == SLOW_JOB["num_images"]

    again = read_events(client, f"/v1/jobs/{job_id}/events")
    assert [(event.name, event.id) for event in again] == [("done", events[-1].id)], (
        "a finished job: one done, then close"
    )
    assert read_events(client, f"/v1/jobs/{job_id}/events", {"Last-Event-ID": events[-1].id}) == []


def test_a_failed_job_ends_with_one_error_event(client):
    job_id = submit(client, prompt="forbiddenword please")["id"]
    events = read_events(client, f"/v1/jobs/{job_id}/events")
    assert [event.name for event in events] == ["error"]
    assert events[0].data["status"] == "Request Moderated"


def test_a_signed_events_url_opens_without_a_key_and_only_for_that_job(client, base_url):
    job_id = submit(client, prompt="a green square on a white background")["id"]
    token = client.post(f"/v1/jobs/{job_id}/events-token").json()
    assert token["events_url"].startswith(f"{base_url}/v1/jobs/{job_id}/events?exp=")
    with httpx.Client(timeout=60) as anonymous:
        assert [event.name for event in read_events(anonymous, token["events_url"])][-1:] == ["done"]
        no_key = anonymous.get(f"{base_url}/v1/jobs/{job_id}/events")
        assert no_key.status_code == HTTPStatus.UNAUTHORIZED
        other_job = submit(client, prompt="a blue triangle on a black background")["id"]
        stolen = anonymous.get(token["events_url"].replace(job_id, other_job))
        assert stolen.status_code == HTTPStatus.FORBIDDEN
        assert "events-token" in stolen.json()["detail"]
    other_key = client.get(f"/v1/jobs/{job_id}/events", headers={"x-key": SECOND_KEY})
    assert other_key.status_code == HTTPStatus.NOT_FOUND
    assert (
        client.post(f"/v1/jobs/{job_id}/events-token", headers={"x-key": SECOND_KEY}).status_code
        == HTTPStatus.NOT_FOUND
    )


def test_the_studio_page_and_docs_load_everything_from_the_service_itself(client, base_url):
    page = client.get("/")
    assert page.status_code == HTTPStatus.OK and "text/html" in page.headers["content-type"]
    for name in ("app.js", "style.css", "favicon.svg"):
        assert client.get(f"/studio/{name}").status_code == HTTPStatus.OK
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        references = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
        assert references, html
        for reference in references:
            assert urlsplit(reference).netloc in ("", urlsplit(base_url).netloc), f"{path} loads {reference}"
            if reference.startswith("/static-offline-docs/"):
                assert client.get(reference).status_code == HTTPStatus.OK, reference
