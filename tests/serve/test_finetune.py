"""Fine-tuning through the service, BFL's finetune API over real HTTP: a ZIP trains on a Ray actor to an
adapter the same key then generates with (its own route, `loras`, and the `openai` client's model name);
another key can neither see nor use it; a trainer killed mid-run resumes from its checkpoint; bad data is
a 422 that says what to change; a second training of one key waits its turn (429); delete removes it."""

from __future__ import annotations

import base64
import io
import os
import signal
import time
import zipfile

import httpx
import psutil
import pytest
from PIL import Image

from tests.serve.conftest import API_KEY, SECOND_KEY, wait_for_job

pytestmark = pytest.mark.serve
MODEL = "flux-2-klein-4b"
ITERATIONS = 24


def drawing(colour: tuple[int, int, int], background: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (64, 64), background)
    image.paste(colour, (16, 16, 48, 48))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def training_zip() -> str:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for index, (colour, background) in enumerate([((200, 0, 0), (0, 0, 200)), ((0, 200, 0), (255, 255, 255))]):
            archive.writestr(f"set/{index}.png", drawing(colour, background))
            archive.writestr(f"set/{index}.txt", "a TOK on a plain background")
        archive.writestr("set/2.png", drawing((250, 200, 0), (0, 0, 0)))  # no caption: one is written
    return base64.b64encode(out.getvalue()).decode()


def wait_until(condition, timeout_s: float = 240, what: str = "it") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened in {timeout_s} s"
        time.sleep(0.3)


def trainer_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "TrainerHost" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def finetune(base_url) -> dict:
    """One finetune of API_KEY, killed once mid-run (after its first checkpoint), then Ready."""
    with httpx.Client(base_url=base_url, headers={"x-key": API_KEY}, timeout=60) as client:
        return train_one(client)


def train_one(client: httpx.Client) -> dict:
    body = {"file_data": training_zip(), "finetune_comment": "plain squares", "mode": "style", "iterations": ITERATIONS}
    submitted = client.post("/v1/finetune", json=body)
    assert submitted.status_code == 200, submitted.text
    answer = submitted.json()
    assert answer["id"] == answer["finetune_id"] and answer["polling_url"].endswith(answer["id"])
    finetune_id = answer["id"]

    busy = client.post("/v1/finetune", json=body)
    assert busy.status_code == 429 and "still training" in busy.json()["detail"], busy.text

    details = lambda: client.get("/v1/finetune_details", params={"finetune_id": finetune_id}).json()  # noqa: E731
    wait_until(lambda: (details().get("progress") or {}).get("step", 0) > 4, what="a step after the first checkpoint")
    for process in trainer_processes():
        os.kill(process.pid, signal.SIGKILL)
    result = wait_for_job(client, finetune_id, timeout_s=400)
    assert result["status"] == "Ready", result
    return {"id": finetune_id, "details": details(), "job": client.get(f"/v1/jobs/{finetune_id}").json()}


def test_a_finetune_trains_resumes_after_its_trainer_dies_and_says_what_it_made(client, finetune):
    details = finetune["details"]
    assert details["status"] == "Ready" and details["images"] == 3 and details["captions_written"] == 1
    assert details["mode"] == "style" and details["trigger_word"] == "TOK" and details["iterations"] == ITERATIONS
    assert details["model"] == MODEL and details["base_variant"] and details["default_strength"] is not None
    assert finetune["job"]["attempts"] == 2, "the killed trainer's attempt was retried"
    assert details["samples"], "sample images were stored while it trained"
    sample = httpx.get(details["samples"][-1])
    assert sample.status_code == 200 and Image.open(io.BytesIO(sample.content)).size[0] > 0
    assert client.get("/v1/my_finetunes").json()["finetunes"] == [finetune["id"]]
    assert finetune["id"] in [lora["id"] for lora in client.get("/v1/loras").json()]


def test_its_key_generates_with_it_by_route_by_loras_and_through_the_openai_client(client, base_url, finetune):
    finetune_id = finetune["id"]
    routed = client.post(f"/v1/{MODEL}-finetuned", json={"prompt": "a TOK", "finetune_id": finetune_id, "seed": 3})
    assert routed.status_code == 200, routed.text
    assert wait_for_job(client, routed.json()["id"])["status"] == "Ready"
    record = client.get(f"/v1/jobs/{routed.json()['id']}").json()
    assert record["request"]["loras"][0]["id"] == finetune_id
    assert record["request"]["loras"][0]["scale"] == finetune["details"]["default_strength"]

    strong = client.post(f"/v1/{MODEL}", json={"prompt": "a TOK", "loras": [{"id": finetune_id, "scale": 1.5}]})
    assert strong.status_code == 200 and wait_for_job(client, strong.json()["id"])["status"] == "Ready"

    import openai

    images = openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY).images.generate(
        model=f"{MODEL}-finetuned:{finetune_id}", prompt="a TOK", size="64x64", response_format="url"
    )
    assert len(images.data) == 1 and images.data[0].url


def test_another_key_can_neither_see_nor_use_it(base_url, finetune):
    finetune_id = finetune["id"]
    with httpx.Client(base_url=base_url, headers={"x-key": SECOND_KEY}, timeout=60) as other:
        assert other.get("/v1/finetune_details", params={"finetune_id": finetune_id}).status_code == 404
        assert other.get("/v1/get_result", params={"id": finetune_id}).json()["status"] == "Task not found"
        assert finetune_id not in other.get("/v1/my_finetunes").json()["finetunes"]
        assert finetune_id not in [lora["id"] for lora in other.get("/v1/loras").json()]
        routed = other.post(f"/v1/{MODEL}-finetuned", json={"prompt": "a TOK", "finetune_id": finetune_id})
        assert routed.status_code == 404, routed.text
        borrowed = other.post(f"/v1/{MODEL}", json={"prompt": "a TOK", "loras": [{"id": finetune_id}]})
        assert borrowed.status_code == 422 and "No LoRA" in borrowed.text
        assert other.post("/v1/delete_finetune", json={"finetune_id": finetune_id}).status_code == 404


def test_bad_training_data_is_a_422_that_says_what_to_change(client):
    def refused(body: dict) -> str:
        answer = client.post("/v1/finetune", json={"finetune_comment": "x", "mode": "style", **body})
        assert answer.status_code == 422, answer.text
        return answer.text

    assert "not base64" in refused({"file_data": "%%%"})
    assert "not a readable ZIP" in refused({"file_data": base64.b64encode(b"not a zip").decode()})
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.png", bytes(64 * 2**20))
    assert "inflates past" in refused({"file_data": base64.b64encode(bomb.getvalue()).decode()})
    climbing = io.BytesIO()
    with zipfile.ZipFile(climbing, "w") as archive:
        archive.writestr("../evil.png", drawing((0, 0, 0), (255, 255, 255)))
    assert "climbs out" in refused({"file_data": base64.b64encode(climbing.getvalue()).decode()})
    assert "trigger_word" in refused({"file_data": training_zip(), "trigger_word": "two words"})


def test_a_multipart_finetune_is_taken_and_delete_cancels_it_and_removes_it(client, finetune):
    files = [("files", (f"{index}.png", drawing((200, 0, 0), (0, 0, 200)), "image/png")) for index in range(2)]
    form = {"finetune_comment": "from a form", "mode": "character", "trigger_word": "ZED", "iterations": "200"}
    submitted = client.post("/v1/finetune", data=form, files=files)
    assert submitted.status_code == 200, submitted.text
    finetune_id = submitted.json()["finetune_id"]
    details = client.get("/v1/finetune_details", params={"finetune_id": finetune_id}).json()
    assert (details["mode"], details["trigger_word"], details["images"]) == ("character", "ZED", 2)
    deleted = client.post("/v1/delete_finetune", json={"finetune_id": finetune_id})
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert client.get("/v1/finetune_details", params={"finetune_id": finetune_id}).status_code == 404
    assert finetune_id not in client.get("/v1/my_finetunes").json()["finetunes"]
