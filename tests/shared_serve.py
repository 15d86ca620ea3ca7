"""The one shared Ray Serve instance, for the service tests (tests/serve) and the browser tests
(tests/browser): logical GPUs, tiny emulated models, real HTTP. Registered in tests/conftest.py so
both folders get the same session fixture (one Ray per session); settings live in tests/serve/conftest.py."""

from __future__ import annotations

import os

import httpx
import pytest


@pytest.fixture(scope="session")
def serve_instance(tmp_path_factory):
    """Ray with 2 logical GPUs and the app deployed, storing in a local folder.

    Yields (base_url, args). Replicas inherit this process's environment: the keys and the
    URL signing key. (The store's S3 path is tested against a loopback S3 server in
    tests/unit/test_s3_store.py; a whole Serve instance on it is too slow for CI.)
    """
    import ray
    from ray import serve

    from serve_apps.builder import build_app
    from tests.conftest import free_port
    from tests.serve.conftest import API_KEY, SECOND_KEY, URL_SIGNING_KEY, service_args

    os.environ["FLUX_API_KEYS"] = f"{API_KEY},{SECOND_KEY}"
    os.environ["FLUX_URL_SIGNING_KEY"] = URL_SIGNING_KEY
    port = free_port()
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = service_args(str(tmp_path_factory.mktemp("storage")), {}, str(tmp_path_factory.mktemp("loras")))
    serve.run(build_app(args), name="flux", route_prefix="/")
    yield f"http://127.0.0.1:{port}", args
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def base_url(serve_instance) -> str:
    return serve_instance[0]


@pytest.fixture
def client(base_url):
    from tests.serve.conftest import API_KEY

    with httpx.Client(base_url=base_url, headers={"x-key": API_KEY}, timeout=60) as http:
        yield http
