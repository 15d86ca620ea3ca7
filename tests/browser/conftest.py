"""Headless Chromium (Debian's `chromium`, driven by Playwright) against the shared Ray Serve instance.

Every page records the hosts it requests; a test fails if any is not the service. Screenshots
go to $FLUX_TEST_ARTIFACTS (or a pytest temporary folder) as artifacts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM_ENV = "FLUX_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
ARTIFACTS_ENV = "FLUX_TEST_ARTIFACTS"
DESKTOP = {"width": 1280, "height": 900}


def find_chromium() -> str | None:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if Path(configured).exists() else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def request_host(url: str) -> str:
    """The host a request goes to; a `blob:` URL (a file the page holds, e.g. a reference image's
    thumbnail) is its page's origin and never leaves the browser."""
    return urlsplit(url.removeprefix("blob:")).netloc


@pytest.fixture(scope="module")
def browser():
    """Per module: Playwright's sync API runs an event loop in this thread while it is open, and
    every later `asyncio.run` of the suite would fail with "cannot be called from a running event loop"."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: bash setup.sh")
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH and ${CHROMIUM_ENV}): "
            "`apt-get install chromium` or run setup.sh as root"
        )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get(ARTIFACTS_ENV) or tmp_path_factory.mktemp("studio"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def open_page(browser, base_url):
    """`open_page(viewport)` -> a fresh page (own storage) on the studio; each checks its requests' hosts."""
    service_host = urlsplit(base_url).netloc
    contexts, requested = [], []

    def open_(viewport: dict = DESKTOP):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(base_url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()
    foreign = [url for url in requested if request_host(url) != service_host]
    assert not foreign, f"the page requested other hosts than the service ({service_host}): {foreign}"
