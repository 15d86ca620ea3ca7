"""The v1 API over real HTTP against the shared Ray Serve instance."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import ray
from PIL import Image

from tests.serve.conftest import API_KEY, wait_for_job

pytestmark = pytest.mark.serve


def submit(client: httpx.Client, model: str = "flux-2-klein-4b", **fields) -> dict:
    body = {"prompt": "a red circle on a blue background", "width": 64, "height": 64, **fields}
    response = client.post(f"/v1/{model}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_ping_docs_and_openapi_are_open(base_url):
    assert httpx.get(f"{base_url}/ping").text == "it works"
    assert httpx.get(f"{base_url}/docs").status_code == 200
    assert "/v1/{model}" in httpx.get(f"{base_url}/openapi.json").json()["paths"]


def test_echo(client):
    assert client.post("/v1/echo", json={"hello": 1}).json() == {"echo": {"hello": 1}}


def test_submit_four_and_fetch_images(client):
    submitted = submit(client, num_images=4, width=256, height=144, output_format="png", seed=42)
    assert submitted["polling_url"].endswith(f"/v1/get_result?id={submitted['id']}")
    result = wait_for_job(client, submitted["id"])
    assert result["status"] == "Ready", result
    assert result["result"]["seed"] == 42
    assert result["result"]["sample"] == result["result"]["samples"][0]
    assert len(result["result"]["samples"]) == 4
    for url in result["result"]["samples"]:
        image = httpx.get(url)
        assert image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (256, 144)

    job = client.get(f"/v1/jobs/{submitted['id']}").json()
    assert job["progress"] == {"step": 4, "total": 4, "eta_s": 0.0}
    assert job["seed"] == 42 and job["attempts"] == 1 and job["stage"] == "done"
    assert {"encode", "queue", "denoise", "decode", "total"} <= set(job["timings_s"])


@pytest.mark.parametrize(("output_format", "media_type"), [("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_output_formats(client, output_format, media_type):
    result = wait_for_job(client, submit(client, output_format=output_format)["id"])
    assert httpx.get(result["result"]["sample"]).headers["content-type"] == media_type


def test_aspect_ratio_and_the_other_model(client):
    result = wait_for_job(client, submit(client, "flux-2-klein-9b", width=None, height=None, aspect_ratio="16:9")["id"])
    assert (result["result"]["width"], result["result"]["height"]) == (1360, 768)


def test_concurrent_submits_share_a_forward_pass(client):
    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(lambda seed: submit(client, seed=seed), range(6)))
    batches = [client.get(f"/v1/jobs/{wait_for_job(client, job['id'])['id']}").json()["batch"] for job in jobs]
    assert max(batch["requests"] for batch in batches) >= 2, batches


def test_models_say_plainly_they_are_emulated(client):
    models = {model["id"]: model for model in client.get("/v1/models").json()}
    assert {name for name, model in models.items() if model["served"]} == {"flux-2-klein-4b", "flux-2-klein-9b"}
    known = {"flux-2-klein-base-4b", "flux-2-klein-base-9b", "flux-2-klein-9b-kv"}
    assert {name for name, model in models.items() if not model["served"]} == known  # from their specs alone
    assert models["flux-2-klein-9b-kv"]["pipeline"] == "Flux2KleinKVPipeline"
    assert not models["flux-2-klein-9b-kv"]["capabilities"]["mask"] and models["flux-2-klein-9b-kv"]["replicas"] is None
    four = models["flux-2-klein-4b"]
    assert four["emulated"] and "random weights" in four["description"]
    assert four["license"] == "Apache-2.0" and not models["flux-2-klein-9b"]["commercial_use"]
    assert four["defaults"]["steps"] == 4 and four["replicas"]["num_gpus_each"] == 0.5
    assert four["replicas"]["running"] >= 1
    assert four["deterministic"] is False and models["flux-2-klein-9b-kv"]["deterministic"] is None


def test_fractional_gpus_are_really_scheduled(serve_instance):
    assert ray.cluster_resources()["GPU"] == 2
    assert ray.available_resources().get("GPU", 0) <= 1.0, "two denoisers at 0.5 GPU each hold one GPU"


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}],
)
def test_requests_without_a_valid_key_get_401(base_url, headers):
    response = httpx.post(f"{base_url}/v1/flux-2-klein-4b", json={"prompt": "x"}, headers=headers)
    assert response.status_code == 401
    assert "x-key" in response.json()["detail"]


def test_bearer_and_second_key_work(base_url):
    for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"x-key": "second-key"}):
        assert httpx.post(f"{base_url}/v1/echo", json={}, headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"width": 100}, "width", "multiple of 16"),
        ({"width": 32}, "width", "greater than or equal to 64"),
        ({"width": 4096, "height": 2048}, None, "at most 4 megapixels in all"),
        ({"width": 8192}, "width", "at most 4 megapixels in all"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"steps": 1000}, "steps", "less than or equal to 50"),
        ({"num_images": 13}, "num_images", "less than or equal to 12"),
        ({"output_format": "gif"}, "output_format", "'jpeg', 'png' or 'webp'"),
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "x" * 100_000}, "prompt", "at most 10000 characters"),
        ({"aspect_ratio": "wide"}, None, "must look like '16:9'"),
        ({"aspect_ratio": "16:9", "width": 512}, None, "either aspect_ratio or width/height"),
        ({"seed": -5}, "seed", "greater than or equal to 0"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_fields_get_422_naming_the_field(client, body, field, words):
    response = client.post("/v1/flux-2-klein-4b", json={"prompt": "a cat", **body})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    if field:
        assert problem["loc"][-1] == field
    assert words in problem["msg"]


def test_malformed_json_and_unknown_model(client):
    response = client.post("/v1/flux-2-klein-4b", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    unknown = client.post("/v1/flux-3-giant", json={"prompt": "x"})
    assert unknown.status_code == 404 and "flux-2-klein-4b" in unknown.json()["detail"]


def test_unknown_job_and_image(client, base_url):
    assert client.get("/v1/get_result", params={"id": "nope"}).json()["status"] == "Task not found"
    assert client.get("/v1/jobs/" + "0" * 32).status_code == 404
    assert httpx.get(f"{base_url}/v1/images/{'0' * 32}/0.png").status_code == 403, "unsigned"
    assert httpx.get(f"{base_url}/v1/images/..%2F..%2Fetc/passwd").status_code in (403, 404)


def test_batch_size_changes_live_through_user_config(client, serve_instance):
    from ray import serve

    from serve_apps.builder import build_app

    _, args = serve_instance
    unbatched = {
        **args,
        "models": {
            m: {**a, "batching": {"max_batch_size": 1, "batch_wait_timeout_s": 0.5}} for m, a in args["models"].items()
        },
    }
    serve.run(build_app(unbatched), name="flux", route_prefix="/")
    try:
        with ThreadPoolExecutor(4) as pool:
            jobs = list(pool.map(lambda seed: submit(client, seed=seed), range(4)))
        batches = [client.get(f"/v1/jobs/{wait_for_job(client, job['id'])['id']}").json()["batch"] for job in jobs]
        assert all(batch["requests"] == 1 for batch in batches), batches
    finally:
        serve.run(build_app(args), name="flux", route_prefix="/")


def test_jobs_are_metered_and_usage_sums_them(base_url):
    with httpx.Client(base_url=base_url, headers={"x-key": "second-key"}, timeout=60) as second:
        jobs = [wait_for_job(second, submit(second, num_images=n)["id"]) for n in (1, 2)]
        records = [second.get(f"/v1/jobs/{job['id']}").json() for job in jobs]
        usage = second.get("/v1/usage").json()
    for record in records:
        assert record["usage"]["gpu_seconds"] > 0 and record["usage"]["cost_usd"] > 0
        assert record["usage"]["gpu_type"] == usage["gpu_type"]
        assert "cold_start" in record["timings_s"]
    four = usage["models"]["flux-2-klein-4b"]
    assert four["images"] >= 3 and four["gpu_seconds"] >= sum(r["usage"]["gpu_seconds"] for r in records) * 0.999
    assert usage["total"]["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in usage["models"].values()))


def running_replicas(deployment: str) -> int:
    from ray import serve

    return serve.status().applications["flux"].deployments[deployment].replica_states.get("RUNNING", 0)


def test_scale_to_zero_then_cold_start_on_the_first_request(client, serve_instance):
    import time

    from ray import serve

    from serve_apps.builder import build_app

    _, args = serve_instance
    zero = {"min_replicas": 0, "max_replicas": 1, "upscale_delay_s": 0, "downscale_delay_s": 2}
    scaled = {
        **args,
        "models": {**args["models"], "flux-2-klein-9b": {**args["models"]["flux-2-klein-9b"], "autoscaling": zero}},
    }
    serve.run(build_app(scaled), name="flux", route_prefix="/")
    try:
        deadline = time.monotonic() + 60
        while running_replicas("Denoiser-flux-2-klein-9b") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert running_replicas("Denoiser-flux-2-klein-9b") == 0, "idle variant scaled to zero"
        result = wait_for_job(client, submit(client, "flux-2-klein-9b")["id"], timeout_s=120)
        assert result["status"] == "Ready", f"the first request waited for a replica instead of failing: {result}"
        timings = client.get(f"/v1/jobs/{result['id']}").json()["timings_s"]
        assert timings["cold_start"] > 0 and timings["queue"] >= timings["cold_start"] * 0.5
        print(f"cold start from zero: {timings['cold_start']:.2f} s, total {timings['total']:.2f} s")
    finally:
        serve.run(build_app(args), name="flux", route_prefix="/")
