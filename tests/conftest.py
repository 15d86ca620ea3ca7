"""Shared fixtures: the tiny emulated workers, loaded once per session."""

from __future__ import annotations

import pytest

from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder

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
