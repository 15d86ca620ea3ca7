"""ETA and deadlines through the service (issue 28): a submit answers eta_s, GET /v1/jobs/{id} keeps one while
Pending, a deadline the ETA is over is refused at once (429, what would fit, no job left behind), a feasible one
is taken and runs."""

from __future__ import annotations

import httpx

from tests.serve.conftest import wait_for_job

MODEL = "flux-2-klein-4b"
QUICK = {"prompt": "a red circle on a blue background", "width": 64, "height": 64}


def newest_job_id(client: httpx.Client) -> str | None:
    jobs = client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
    return jobs[0]["id"] if jobs else None


def test_a_submit_answers_an_eta_and_the_job_keeps_one_while_pending(client):
    for seed in range(3):  # the running figures are learned from Ready jobs
        assert (
            wait_for_job(client, client.post(f"/v1/{MODEL}", json={**QUICK, "seed": seed}).json()["id"])["status"]
            == "Ready"
        )
    submitted = client.post(f"/v1/{MODEL}", json={**QUICK, "width": 256, "height": 256, "steps": 8})
    assert submitted.status_code == 200, submitted.text
    answer = submitted.json()
    assert 0 < answer["eta_s"] < 120, answer
    job = client.get(f"/v1/jobs/{answer['id']}").json()
    if job["status"] == "Pending":
        assert job["eta_s"] is not None and job["eta_s"] >= 0, job
    ready = wait_for_job(client, answer["id"])
    assert ready["status"] == "Ready"
    assert client.get(f"/v1/jobs/{answer['id']}").json()["eta_s"] is None, "no ETA once it has ended"


def test_a_deadline_the_eta_is_over_is_refused_at_once_saying_what_fits_and_leaves_no_job(client):
    before = newest_job_id(client)
    body = {**QUICK, "width": 512, "height": 512, "steps": 8, "num_images": 2, "deadline_s": 0.001}
    refused = client.post(f"/v1/{MODEL}", json=body)
    assert refused.status_code == 429, refused.text
    answer = refused.json()
    assert "deadline_s 0.001 cannot be met" in answer["detail"] and answer["eta_s"] > 0.001, answer
    assert answer["deadline_s"] == 0.001 and isinstance(answer["fits"], dict)
    assert int(refused.headers["Retry-After"]) >= 1
    assert newest_job_id(client) == before, "a refused submit leaves no job in the key's history"


def test_a_feasible_deadline_is_taken_and_a_bad_one_is_a_422_saying_the_range(client):
    taken = client.post(f"/v1/{MODEL}", json={**QUICK, "deadline_s": 300})
    assert taken.status_code == 200, taken.text
    assert taken.json()["eta_s"] <= 300
    assert wait_for_job(client, taken.json()["id"])["status"] == "Ready"
    for deadline_s in (0, -5, 100_000):
        refused = client.post(f"/v1/{MODEL}", json={**QUICK, "deadline_s": deadline_s})
        assert refused.status_code == 422, refused.text
        assert "above 0 and at most 3600" in refused.text
