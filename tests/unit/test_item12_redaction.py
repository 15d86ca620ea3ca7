"""Where the server keeps things is not shown to every key (issue 25): /v1/loras and /v1/models hide file
paths, buckets and storage URLs from user keys (admin keys see them), and a job's stored error has them
replaced, the server log keeping it whole."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deployments.registry import VARIANTS
from serve_apps.api.protocol import ModelInfo
from serve_apps.api.routers import admin, loras
from serve_apps.jobs.core import JobCore
from serve_apps.jobs.records import JobStatus
from serve_apps.security.auth import ApiKeys, hash_key, key_id
from serve_apps.security.redaction import redact_locations
from serve_apps.store.storage import JobStore
from tests.unit.test_job_core import CountKind, open_jobs, submit

ADMIN_KEY, USER_KEY = "operator-admin-key", "alice-user-key"
LOCATIONS = ("/srv", "s3://", "studio-bucket", "models/klein")


def registration(lora_id: str, source: str, owner_key_id: str) -> dict:
    return {
        "id": lora_id,
        "source": source,
        "base_model": "flux-2-klein-4b",
        "trigger_word": "redstyle",
        "license": "CC-BY-4.0",
        "tags": ["person"],
        "rank": 4,
        "fits": ["flux-2-klein-4b"],
        "refusals": {},
        "registered_at": 1.0,
        "owner_key_id": owner_key_id,
    }


def model(name: str, weights: str, description: str) -> ModelInfo:
    return ModelInfo.from_spec(VARIANTS[name], served=True, weights=weights, emulated=False, description=description)


@pytest.fixture
def clients():
    users = SimpleNamespace(key_role=lambda digest: "user" if digest == hash_key(USER_KEY) else None)
    records = [
        registration("red", "/srv/loras/red", key_id(hash_key(USER_KEY))),
        registration("blue", "s3://studio-bucket/loras/blue.safetensors", "someoneelse"),
        registration("hub", "studio/style-lora", "someoneelse"),
    ]
    models = [
        model("flux-2-klein-4b", "/srv/models/klein", "local checkpoint /srv/models/klein"),
        model(
            "flux-2-klein-9b",
            "s3://studio-bucket/models/klein-9b",
            "real weights from s3://studio-bucket/models/klein-9b",
        ),
        model(
            "flux-2-klein-base-4b",
            "black-forest-labs/FLUX.2-klein-base-4B",
            "real weights from black-forest-labs/FLUX.2-klein-base-4B",
        ),
    ]
    app = FastAPI()
    app.state.services = SimpleNamespace(
        keys=ApiKeys({hash_key(ADMIN_KEY)}, stored_keys=users),
        adapters=SimpleNamespace(registered=lambda key_id=None: records),
        describe_models=lambda: models,
    )
    app.include_router(loras.router)
    app.include_router(admin.router)
    return TestClient(app, headers={"x-key": USER_KEY}), TestClient(app, headers={"x-key": ADMIN_KEY})


def test_a_user_key_sees_a_loras_id_tags_and_owner_but_not_where_its_file_is(clients):
    user, operator = clients
    listed = user.get("/v1/loras")
    assert listed.status_code == 200, listed.text
    assert not any(location in listed.text for location in LOCATIONS), listed.text
    by_id = {lora["id"]: lora for lora in listed.json()}
    assert by_id["red"]["yours"] and not by_id["blue"]["yours"]
    assert (by_id["red"]["trigger_word"], by_id["red"]["tags"], by_id["red"]["license"]) == (
        "redstyle",
        ["person"],
        "CC-BY-4.0",
    )
    assert by_id["red"]["source"] is None and by_id["hub"]["source"] == "studio/style-lora", "a hub repo id is public"
    shown = {lora["id"]: lora["source"] for lora in operator.get("/v1/loras").json()}
    assert shown["red"] == "/srv/loras/red" and shown["blue"].startswith("s3://studio-bucket/"), "admin keys see where"


def test_a_user_key_sees_what_kind_of_weights_back_a_model_not_where_they_are(clients):
    user, operator = clients
    listed = user.get("/v1/models")
    assert listed.status_code == 200, listed.text
    assert not any(location in listed.text for location in LOCATIONS), listed.text
    weights = {entry["id"]: entry["weights"] for entry in listed.json()}
    assert weights == {
        "flux-2-klein-4b": "local checkpoint",
        "flux-2-klein-9b": "remote checkpoint",
        "flux-2-klein-base-4b": "black-forest-labs/FLUX.2-klein-base-4B",
    }
    assert {entry["id"]: entry["weights"] for entry in operator.get("/v1/models").json()}["flux-2-klein-4b"] == (
        "/srv/models/klein"
    )


class BrokenKind(CountKind):
    """A worker that fails naming the file and the bucket it could not read."""

    async def run(self, record, claim, context):
        raise FileNotFoundError(
            "[Errno 2] No such file or directory: '/srv/flux/cache/klein.safetensors' (from s3://studio-bucket/klein)"
        )


def test_a_jobs_stored_error_hides_paths_and_buckets_and_says_where_the_full_one_is(tmp_path, caplog):
    from serve_apps.config import AppArgs

    args = AppArgs(storage_url=str(tmp_path), jobs={"max_attempts": 1})
    core = JobCore(open_jobs(f"sqlite:///{tmp_path / 'jobs.db'}"), JobStore(str(tmp_path)), [BrokenKind()], args, dict)
    record, claim = submit(core)

    async def run() -> None:
        core.start(record, claim)
        await core.wait(record.id)

    with caplog.at_level(logging.WARNING, logger="flux_serve.jobs"):
        asyncio.run(run())
    stored = core.jobs.load(record.id)
    assert stored.status == JobStatus.ERROR and "FileNotFoundError" in stored.error
    assert not any(location in stored.error for location in LOCATIONS), stored.error
    assert "'<path>'" in stored.error and "<storage>" in stored.error
    assert f"server log has the full error of job {record.id}" in stored.error
    assert "/srv/flux/cache/klein.safetensors" in caplog.text, "the operator's log keeps it whole"


def test_routes_and_fractions_stay_in_a_message():
    message = "see GET /v1/loras; 1/2 done and/or ~/cache/x, ./here/y and http://minio:9000/bucket/key"
    assert redact_locations(message) == "see GET /v1/loras; 1/2 done and/or <path>, <path> and <url>"
