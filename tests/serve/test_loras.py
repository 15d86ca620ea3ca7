"""LoRA through the service: register, list, apply, refuse before any GPU work."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from deployments.contracts import AdapterRef, DenoiseJob, GenerationParams
from deployments.denoiser import Denoiser
from serve_apps.config import AppArgs
from serve_apps.security.auth import hash_key
from serve_apps.store import Database
from tests.serve.conftest import wait_for_job
from tests.serve.test_api import submit
from tests.unit.test_lora import write_red_dataset
from training.lora_trainer import LoraTrainingConfig, train_lora

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def trained_adapter(serve_instance) -> Path:
    """A 4B adapter trained into the service's allowed LoRA folder."""
    _, args = serve_instance
    root = Path(args["loras"]["allowed_roots"][0])
    data = write_red_dataset(root.parent / "red-data")
    result = train_lora(
        LoraTrainingConfig(
            model="flux-2-klein-4b",
            data=data,
            out=root / "red",
            trigger_word="redstyle",
            weights="emulated:tiny",
            steps=20,
            tags=["style"],
        ),
        show_progress=False,
    )
    return result.adapter_path.parent


def test_register_list_and_apply(client, trained_adapter):
    registered = client.post("/v1/loras", json={"id": "red", "source": str(trained_adapter)})
    assert registered.status_code == 200, registered.text
    info = registered.json()
    assert info["base_model"] == "flux-2-klein-4b" and info["trigger_word"] == "redstyle"
    assert info["fits"] == ["flux-2-klein-4b"] and "flux-2-klein-9b" in info["refusals"]
    assert "red" in [lora["id"] for lora in client.get("/v1/loras").json()]

    job = submit(client, prompt="a circle", loras=[{"id": "red", "scale": 0.8}])
    result = wait_for_job(client, job["id"])
    record = client.get(f"/v1/jobs/{job['id']}").json()
    assert result["status"] == "Ready", result
    assert record["request"]["loras"][0]["scale"] == 0.8
    assert any("redstyle" in warning for warning in record["warnings"]), "the trigger word was forgotten"

    added = client.get(
        f"/v1/jobs/{submit(client, prompt='a circle', loras=[{'id': 'red'}], add_trigger_words=True)['id']}"
    ).json()
    assert added["request"]["prompt"] == "redstyle, a circle" and added["warnings"] == []


def test_wrong_variant_unknown_adapter_and_policy_are_422(client, trained_adapter):
    client.post("/v1/loras", json={"id": "red", "source": str(trained_adapter)})
    wrong = client.post("/v1/flux-2-klein-9b", json={"prompt": "x", "loras": [{"id": "red"}]})
    assert wrong.status_code == 422
    message = wrong.json()["detail"][0]["msg"]
    assert "'red'" in message and "flux-2-klein-4b" in message and "flux-2-klein-9b" in message
    unknown = client.post("/v1/flux-2-klein-4b", json={"prompt": "x", "loras": [{"id": "nope"}]})
    assert unknown.status_code == 422 and "No LoRA 'nope'" in unknown.json()["detail"][0]["msg"]
    client.post("/v1/loras", json={"id": "someone", "source": str(trained_adapter), "tags": ["person"]})
    client.post("/v1/loras", json={"id": "spicy", "source": str(trained_adapter), "tags": ["nsfw"]})
    refused = client.post("/v1/flux-2-klein-4b", json={"prompt": "x", "loras": [{"id": "someone"}, {"id": "spicy"}]})
    assert refused.status_code == 422 and "refused by policy" in refused.json()["detail"][0]["msg"]


def test_sources_outside_the_allowed_roots_are_refused(client, tmp_path):
    outside = client.post("/v1/loras", json={"id": "evil", "source": "/etc/passwd"})
    assert outside.status_code == 422 and "outside the allowed folders" in outside.json()["detail"][0]["msg"]
    bad_id = client.post("/v1/loras", json={"id": "../x", "source": "/etc"})
    assert bad_id.status_code == 422


def test_a_users_adapter_is_usable_by_others_but_only_its_owner_or_an_admin_changes_it(
    base_url, serve_instance, client, trained_adapter
):
    """Two user keys from the keys table (FLUX_API_KEYS are the operator's, admin): bob may apply
    alice's adapter but not re-register its id (which would swap its file or drop its tags)."""
    keys = Database.open(AppArgs(**serve_instance[1]).database_url).keys
    for name in ("alice", "bob"):
        keys.add_key(hash_key(f"{name}-user-key"), name, "user")
    alice, bob = (
        httpx.Client(base_url=base_url, headers={"x-key": f"{name}-user-key"}, timeout=60) for name in ("alice", "bob")
    )
    with alice, bob:
        owned = alice.post("/v1/loras", json={"id": "alices", "source": str(trained_adapter), "tags": ["person"]})
        assert owned.status_code == 200, owned.text
        taken = bob.post("/v1/loras", json={"id": "alices", "source": str(trained_adapter), "tags": []})
        assert taken.status_code in (403, 409, 422) and "alices" in taken.text, taken.text
        assert wait_for_job(bob, submit(bob, prompt="a circle", loras=[{"id": "alices"}])["id"])["status"] == "Ready"
        assert alice.post("/v1/loras", json={"id": "alices", "source": str(trained_adapter)}).status_code == 200
    assert client.post("/v1/loras", json={"id": "alices", "source": str(trained_adapter)}).status_code == 200


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_an_adapter_served_through_the_multiplexed_replica_draws_what_it_draws_in_process(
    client, trained_adapter, encoder
):
    """The LoRA's effect survives the trip: its image differs from the base model's at the same seed and
    equals what the plain workers make in this process with the same adapter file."""
    assert client.post("/v1/loras", json={"id": "red-effect", "source": str(trained_adapter)}).status_code == 200
    job = {"prompt": "redstyle, a circle", "seed": 11, "steps": 4, "output_format": "png"}
    served = {}
    for name, loras in (("base", []), ("adapter", [{"id": "red-effect", "scale": 1.0}])):
        submitted = submit(client, loras=loras, **job)
        assert wait_for_job(client, submitted["id"])["status"] == "Ready"
        record = client.get(f"/v1/jobs/{submitted['id']}").json()
        served[name] = pixels(client.get(record["images"][0]).content)
    assert np.abs(served["adapter"] - served["base"]).mean() > 0.1, "the adapter changed nothing"

    [adapter_file] = trained_adapter.glob("*.safetensors")
    denoiser = Denoiser("flux-2-klein-4b", weights="emulated:tiny")
    params = GenerationParams.with_defaults(
        denoiser.defaults,
        job["prompt"],
        width=64,
        height=64,
        steps=4,
        seed=11,
        output_format="png",
        adapters=(AdapterRef("red-effect", str(adapter_file), 1.0),),
    )
    [in_process] = denoiser.generate([DenoiseJob(params, encoder.encode([job["prompt"]])[0])])
    drawn = pixels(in_process.images[0])
    to_adapter, to_base = np.abs(drawn - served["adapter"]).mean(), np.abs(drawn - served["base"]).mean()
    # float rounding differs between processes (their torch thread counts), so not byte for byte: the in-process
    # image with the adapter is the served adapter image, far closer to it than to the base model's
    assert to_adapter < 0.5 * to_base, f"in-process vs served: {to_adapter:.3f} levels, vs the base: {to_base:.3f}"
