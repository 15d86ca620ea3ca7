"""Shared fixtures: the tiny emulated workers, loaded once per session."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from tests.shared_serve import base_url, client, serve_instance  # noqa: F401  one Ray Serve for tests/serve and tests/browser

MODEL = "flux-2-klein-4b"


@pytest.fixture(scope="session")
def encoder() -> TextEncoder:
    return TextEncoder(MODEL, weights="emulated:tiny")


@pytest.fixture(scope="session")
def encoder_9b() -> TextEncoder:
    return TextEncoder("flux-2-klein-9b", weights="emulated:tiny")


@pytest.fixture(scope="session")
def denoiser() -> Denoiser:
    return Denoiser(MODEL, weights="emulated:tiny")


@pytest.fixture(scope="session")
def denoiser_9b() -> Denoiser:
    return Denoiser("flux-2-klein-9b", weights="emulated:tiny")


@pytest.fixture
def denoiser_factory():
    def make(**options) -> Denoiser:
        return Denoiser(MODEL, weights="emulated:tiny", **options)

    return make


@pytest.fixture(scope="session")
def prompts(encoder):
    return encoder.encode(["a red circle on a blue background", "a green square on a white background"])


@pytest.fixture(scope="session")
def prompt(prompts):
    return prompts[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto's server mode) on loopback, with one bucket."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("flux-test")
    yield endpoint
    server.stop()


@pytest.fixture
def s3_url(s3_endpoint) -> str:
    return f"s3://flux-test/{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def postgres_server():
    from tests.postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The same job tests on SQLite (the default) and on a PostgreSQL server on loopback."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_server").new_database()


def pytest_collection_modifyitems(items):
    """The two-node cluster tests end with `ray stop --force`, which stops every Ray on this machine,
    the shared Serve instance of tests/browser and tests/serve included: run them first. The browser
    tests go last, after every test that runs its own event loop."""

    def order(item) -> int:
        return 0 if item.get_closest_marker("cluster") else 2 if "tests/browser/" in item.nodeid else 1

    items.sort(key=order)
