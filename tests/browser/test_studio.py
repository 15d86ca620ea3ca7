"""The web studio end to end in headless Chromium: generate, progress, cancel, history, errors, phone width."""

from __future__ import annotations

import httpx
import pytest

from tests.serve.conftest import API_KEY

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000


def enter_key(page, key: str = API_KEY) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Tab")  # `change` stores it and loads models, LoRAs, history, usage


def generate(page, prompt: str, num_images: int, steps: int, size_px: int):
    """Fill the form, press Generate; returns the new job's card."""
    page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=TIMEOUT_MS)
    before = page.locator("#results article.job").count()
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label("Number of images").fill(str(num_images))
    page.get_by_label("Steps").fill(str(steps))
    page.locator("summary").click()
    page.get_by_label("Width").fill(str(size_px))
    page.get_by_label("Height").fill(str(size_px))
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"document.querySelectorAll('#results article.job').length > {before}", timeout=TIMEOUT_MS)
    return page.get_by_role("region", name="Results").locator("article.job").first


def test_generate_four_images_with_progress_then_find_the_job_in_history_after_a_reload(open_page, artifacts):
    page = open_page()
    enter_key(page)
    page.screenshot(path=artifacts / "1-empty.png", full_page=True)
    card = generate(page, "a red circle on a blue background", num_images=4, steps=20, size_px=256)
    card.locator(".status").filter(has_text="Step").or_(card.locator(".status").filter(has_text="Queued")).wait_for()
    page.screenshot(path=artifacts / "2-progress.png", full_page=True)
    images = card.locator(".gallery img")
    images.nth(3).wait_for(timeout=TIMEOUT_MS)
    assert images.count() == 4
    page.wait_for_function("el => el.dataset.imagesShown", arg=card.element_handle(), timeout=TIMEOUT_MS)
    assert card.evaluate("el => [...el.querySelectorAll('img')].every(img => img.naturalWidth === 256)")
    assert card.get_attribute("data-progress-seen"), "a progress event reached the page"
    assert "Ready" in card.locator(".status").inner_text()
    page.screenshot(path=artifacts / "3-done.png", full_page=True)

    job_id = card.get_attribute("data-job-id")
    page.reload()
    page.locator(f"#history-{job_id}").wait_for(timeout=TIMEOUT_MS)
    assert "a red circle on a blue background" in page.locator(f"#history-{job_id}").inner_text()
    page.locator(f"#history-{job_id}").get_by_role("button", name="Use these settings again").click()
    assert page.get_by_label("Prompt").input_value() == "a red circle on a blue background"
    assert page.get_by_label("Number of images").input_value() == "4"
    page.screenshot(path=artifacts / "4-history.png", full_page=True)


def test_cancel_a_long_job(open_page, artifacts):
    page = open_page()
    enter_key(page)
    card = generate(page, "a green square on a white background", num_images=1, steps=50, size_px=1024)
    card.locator(".status").filter(has_text="Step").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Cancel").click()
    card.locator(".status").filter(has_text="Cancelled").wait_for(timeout=TIMEOUT_MS)
    assert "cancelled by the user" in card.locator(".status").inner_text()
    assert card.locator("img").count() == 0
    page.screenshot(path=artifacts / "5-cancelled.png", full_page=True)


def test_a_wrong_key_shows_the_apis_own_message(open_page, base_url, artifacts):
    expected = httpx.get(f"{base_url}/v1/models", headers={"x-key": "wrong-key"}).json()["detail"]
    page = open_page()
    enter_key(page, "wrong-key")
    page.get_by_role("alert").filter(has_text=expected).wait_for(timeout=TIMEOUT_MS)
    page.get_by_label("Prompt").fill("a red circle")
    page.get_by_role("button", name="Generate").click()
    assert page.get_by_role("alert").inner_text() == expected
    page.screenshot(path=artifacts / "6-wrong-key.png", full_page=True)


def test_at_phone_width_nothing_overflows_sideways(open_page, artifacts):
    page = open_page(PHONE)
    enter_key(page)
    card = generate(page, "a yellow triangle on a black background with a long prompt " * 4, 4, steps=8, size_px=64)
    card.locator(".gallery img").nth(3).wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("region", name="History").locator("li").first.wait_for(timeout=TIMEOUT_MS)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"scrollWidth {width[0]} > innerWidth {width[1]} at 390 px"
    page.screenshot(path=artifacts / "7-phone.png", full_page=True)
