"""Config, protocol, keys and storage: the service's parts that need no Ray."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_apps.api.protocol import GenerateRequest, side_from_aspect
from serve_apps.builder import ConfigError, validate_args
from serve_apps.security.auth import ApiKeys, hash_key, key_from_headers
from serve_apps.store.storage import JobStore, new_job_id


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"models": {"flux-3": {}}}, "args.models: Value error, unknown model(s) ['flux-3']"),
        ({"models": {"flux-2-klein-4b": {"num_gpus": -1}}}, "args.models.flux-2-klein-4b.num_gpus"),
        ({"models": {"flux-2-klein-4b": {"batching": {"max_batch_size": 0}}}}, "max_batch_size"),
        (
            {"models": {"flux-2-klein-4b": {"autoscaling": {"min_replicas": 3, "max_replicas": 1}}}},
            "above max_replicas",
        ),
        ({"storage": "/tmp"}, "args.storage: Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_field(args, named):
    with pytest.raises(ConfigError) as error:
        validate_args(args)
    assert named in str(error.value)


def test_default_config_serves_both_variants_on_half_a_gpu_each():
    args = validate_args({})
    assert set(args.models) == {"flux-2-klein-4b", "flux-2-klein-9b"}
    assert all(model.num_gpus == 0.5 and model.weights == "emulated" for model in args.models.values())
    assert args.storage_url.startswith("/"), "local storage is made absolute for replicas"


@pytest.mark.parametrize(
    ("ratio", "size"), [("1:1", (1024, 1024)), ("16:9", (1360, 768)), ("9:16", (768, 1360)), ("3:2", (1248, 832))]
)
def test_aspect_ratio_gives_about_a_megapixel_in_multiples_of_16(ratio, size):
    assert side_from_aspect(ratio) == size
    assert GenerateRequest(prompt="x", aspect_ratio=ratio).size(1024, 1024) == size


def test_aspect_ratio_follows_the_models_default_area():
    assert GenerateRequest(prompt="x", aspect_ratio="16:9").size(64, 64) == (80, 64), "clamped to 64 px"
    assert GenerateRequest(prompt="x", aspect_ratio="16:9").size(512, 512) == (688, 384)
    assert GenerateRequest(prompt="x", aspect_ratio="1:4").size(64, 64) == (64, 128)


def test_request_defaults_and_limits():
    request = GenerateRequest(prompt="a cat")
    assert request.size(1024, 1024) == (1024, 1024) and request.size(64, 64) == (64, 64)
    assert GenerateRequest(prompt="a cat", width=512).size(64, 64) == (512, 64)
    assert (request.num_images, request.output_format) == (1, "jpeg")
    with pytest.raises(ValidationError, match="multiple of 16"):
        GenerateRequest(prompt="a cat", height=1000)


def test_keys_from_env_and_hash_file(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# team keys\n{hash_key('from-file')} alice\n")
    monkeypatch.setenv("FLUX_API_KEYS", "one, two")
    keys = ApiKeys.from_environment(str(keys_file))
    assert all(keys.identify(key) for key in ("one", "two", "from-file"))
    assert keys.identify("three") is None and keys.identify(None) is None
    assert "from-file" not in keys_file.read_text()
    assert keys.identify("one") == hash_key("one")[:12]


def test_key_headers():
    assert key_from_headers({"x-key": "k"}) == "k"
    assert key_from_headers({"authorization": "Bearer k"}) == "k"
    assert key_from_headers({"authorization": "Basic k"}) is None


def test_store_round_trip_and_refuses_paths(tmp_path):
    store = JobStore(str(tmp_path))
    job_id = new_job_id()
    store.save_image(job_id, "0.png", b"png-bytes")
    assert store.load_image(job_id, "0.png") == b"png-bytes"
    assert store.load_image("../../etc/passwd", "0.png") is None
    assert store.load_image(job_id, "../job.json") is None
    assert not list(tmp_path.rglob("*.tmp")), "writes are moved into place"
