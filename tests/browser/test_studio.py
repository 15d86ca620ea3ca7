"""The web studio end to end in headless Chromium: generate, progress, cancel, history, errors, reference
images (editing), phone width."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.serve.conftest import API_KEY

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000
TRAINING_TIMEOUT_MS = 180_000  # the Train test's waits: a training shares the 2 CPUs with the whole suite


def enter_key(page, key: str = API_KEY) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Tab")  # `change` stores it and loads models, LoRAs, history, usage


def png_file(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    image = Image.new("RGB", size, color)
    image.paste((250, 250, 250), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))  # something to edit
    image.save(path)
    return path


def uploaded_references(page, count: int) -> list[str]:
    """Wait until the form shows `count` references, each uploaded; their upload ids."""
    page.wait_for_function(
        f"document.querySelectorAll('#reference-list li').length === {count} && "
        f"document.querySelectorAll('#reference-list li[data-upload-id]').length === {count}",
        timeout=TIMEOUT_MS,
    )
    return page.locator("#reference-list li").evaluate_all("items => items.map(item => item.dataset.uploadId)")


def generate(page, prompt: str, num_images: int, steps: int, size_px: int | None):
    """Fill the form, press Generate; returns the new job's card. `size_px` None: no size given."""
    page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=TIMEOUT_MS)
    before = page.locator("#results article.job").count()
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label("Number of images").fill(str(num_images))
    page.get_by_label("Steps").fill(str(steps))
    if size_px is not None:
        page.locator("summary").click()
        page.get_by_label("Width").fill(str(size_px))
        page.get_by_label("Height").fill(str(size_px))
    page.get_by_role("button", name="Generate", exact=True).click()
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
    assert card.get_attribute("data-eta-s").isdigit(), "the submit's eta_s was shown while queued"
    page.wait_for_function("el => !el.querySelector('.eta')", arg=card.element_handle(), timeout=TIMEOUT_MS)
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


def test_the_card_shows_the_image_forming_before_it_is_ready(open_page, artifacts):
    page = open_page()
    enter_key(page)
    card = generate(page, "a yellow circle on a black background", num_images=1, steps=24, size_px=512)
    card.locator("img.forming").wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=artifacts / "2b-forming.png", full_page=True)
    assert card.locator("img.forming").get_attribute("src").startswith("data:image/jpeg;base64,")
    page.wait_for_function("el => el.dataset.imagesShown", arg=card.element_handle(), timeout=TIMEOUT_MS)
    seen_at, finished_at = (float(card.get_attribute(name)) for name in ("data-preview-seen", "data-finished-at"))
    assert seen_at < finished_at, "the picture came while the job ran"
    assert card.locator("img.forming").count() == 0 and card.locator(".gallery img").count() == 1, "replaced on Ready"


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
    page.get_by_role("button", name="Generate", exact=True).click()
    assert page.get_by_role("alert").inner_text() == expected
    page.screenshot(path=artifacts / "6-wrong-key.png", full_page=True)


def test_edit_a_reference_image_from_the_file_picker_then_use_it_again(open_page, client, tmp_path, artifacts):
    reference = png_file(tmp_path / "wide.png", (128, 64), (40, 90, 200))  # 2:1, so the output is wide too
    page = open_page()
    enter_key(page)
    page.get_by_label("Reference images").set_input_files(reference)
    [upload_id] = uploaded_references(page, 1)
    assert upload_id.startswith("upload_")
    assert page.get_by_label("Aspect ratio").locator("option").first.inner_text() == "as reference 1"
    page.screenshot(path=artifacts / "8-reference.png", full_page=True)

    card = generate(page, "make the background yellow", num_images=2, steps=2, size_px=None)
    card.locator(".gallery img").nth(1).wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("el => el.dataset.imagesShown", arg=card.element_handle(), timeout=TIMEOUT_MS)
    assert "Ready" in card.locator(".status").inner_text() and "1 reference" in card.locator(".status").inner_text()
    sizes = card.evaluate(
        "el => [...el.querySelectorAll('.gallery img')].map(img => [img.naturalWidth, img.naturalHeight])"
    )
    assert len(sizes) == 2 and all(width > height for width, height in sizes), sizes
    page.screenshot(path=artifacts / "9-edited.png", full_page=True)

    job_id = card.get_attribute("data-job-id")
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "Ready" and len(job["references"]) == 1, job
    assert job["request"]["width"] > job["request"]["height"]  # the server took the reference's shape

    # The form keeps the reference after Generate; removed, then back with the job's settings (same upload id).
    page.get_by_role("button", name="Remove reference 1").click()
    assert page.locator("#reference-list li").count() == 0
    card.get_by_role("button", name="Use these settings again").click()
    assert uploaded_references(page, 1) == [upload_id]
    assert page.get_by_label("Prompt").input_value() == "make the background yellow"

    # After a reload the page no longer knows the id: it uploads the job's stored reference again.
    page.reload()
    page.locator(f"#history-{job_id}").wait_for(timeout=TIMEOUT_MS)
    assert "1 reference" in page.locator(f"#history-{job_id}").inner_text()
    page.locator(f"#history-{job_id}").get_by_role("button", name="Use these settings again").click()
    [again] = uploaded_references(page, 1)
    assert again.startswith("upload_") and again != upload_id
    page.get_by_role("button", name="Remove reference 1").wait_for()
    page.screenshot(path=artifacts / "10-reference-again.png", full_page=True)


def test_a_reference_that_is_not_an_image_shows_the_apis_own_message(open_page, base_url, tmp_path, artifacts):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image at all")
    refused = httpx.post(
        f"{base_url}/v1/uploads", headers={"x-key": API_KEY}, files={"file": ("notes.txt", notes.read_bytes())}
    )
    assert refused.status_code == 422
    expected = refused.json()["detail"][0]["msg"]
    page = open_page()
    enter_key(page)
    page.get_by_label("Reference images").set_input_files(notes)
    page.get_by_role("alert").filter(has_text=expected).wait_for(timeout=TIMEOUT_MS)
    assert page.get_by_role("alert").inner_text().startswith("notes.txt: ")
    page.wait_for_function("document.querySelectorAll('#reference-list li').length === 0", timeout=TIMEOUT_MS)
    page.screenshot(path=artifacts / "11-not-an-image.png", full_page=True)

    # Dropped on the form instead of picked: the same upload.
    png = png_file(tmp_path / "dropped.png", (64, 64), (10, 160, 90)).read_bytes()
    dropped = page.evaluate_handle(
        """bytes => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" }));
            return transfer;
        }""",
        list(png),
    )
    page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": dropped})
    assert uploaded_references(page, 1)[0].startswith("upload_")
    assert page.get_by_role("img", name="Reference 1: dropped.png").is_visible()


def test_at_phone_width_nothing_overflows_sideways(open_page, tmp_path, artifacts):
    page = open_page(PHONE)
    enter_key(page)
    card = generate(page, "a yellow triangle on a black background with a long prompt " * 4, 4, steps=8, size_px=64)
    card.locator(".gallery img").nth(3).wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("region", name="History").locator("li").first.wait_for(timeout=TIMEOUT_MS)
    # Four references (the cap), one with a long name: thumbnails in a row, the picker off.
    long_name = "a-reference-image-with-a-very-long-file-name-that-could-push-the-page-sideways"
    files = [
        png_file(tmp_path / f"{name}.png", (64, 96), (200, 60 * n, 40))
        for n, name in enumerate(["a", "b", "c", long_name])
    ]
    page.get_by_label("Reference images").set_input_files(files)
    uploaded_references(page, 4)
    assert page.get_by_label("Reference images").is_disabled()
    page.get_by_role("button", name="Remove reference 4").wait_for()
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"scrollWidth {width[0]} > innerWidth {width[1]} at 390 px"
    page.screenshot(path=artifacts / "7-phone.png", full_page=True)


def test_same_settings_new_seed_and_the_usage_panel(open_page, client):
    """ "Same settings, new seed" submits the job's request again with only the seed drawn anew; the usage
    panel shows what /v1/usage says for the key once a job has ended."""
    page = open_page()
    enter_key(page)
    card = generate(page, "a green square on a white background", num_images=1, steps=4, size_px=64)
    page.wait_for_function("el => el.dataset.imagesShown", arg=card.element_handle(), timeout=TIMEOUT_MS)
    first_id = card.get_attribute("data-job-id")
    before = page.locator("#results article.job").count()
    card.get_by_role("button", name="Same settings, new seed").click()
    page.wait_for_function(f"document.querySelectorAll('#results article.job').length > {before}", timeout=TIMEOUT_MS)
    again = page.get_by_role("region", name="Results").locator("article.job").first
    page.wait_for_function("el => el.dataset.imagesShown", arg=again.element_handle(), timeout=TIMEOUT_MS)
    first, second = (
        client.get(f"/v1/jobs/{job_id}").json() for job_id in (first_id, again.get_attribute("data-job-id"))
    )
    assert second["id"] != first["id"] and second["seed"] != first["seed"]
    without_seed = lambda request: {name: value for name, value in request.items() if name != "seed"}  # noqa: E731
    assert without_seed(second["request"]) == without_seed(first["request"])

    usage = client.get("/v1/usage").json()["total"]
    page.wait_for_function(
        "jobs => document.getElementById('usage-text').textContent.startsWith(`${jobs} jobs, `)",
        arg=usage["jobs"],
        timeout=TIMEOUT_MS,
    )
    assert f"{usage['images']} images" in page.locator("#usage-text").inner_text()


def test_train_a_finetune_watch_it_then_generate_with_it(open_page, client, tmp_path, artifacts):
    """The Train panel: three photos picked, a multipart finetune with 12 iterations, its progress and samples
    polled to Ready, then "Generate with it" ticks it in the LoRA list and the job carries it."""
    photos = [png_file(tmp_path / f"photo-{n}.png", (64, 64), (30 + 70 * n, 120, 200 - 60 * n)) for n in range(3)]
    page = open_page()
    enter_key(page)
    page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=TRAINING_TIMEOUT_MS)
    page.get_by_label("Training photos").set_input_files(photos)
    assert page.locator("#train-list img").count() == 3
    assert page.locator("#train-count").inner_text().startswith("3 photos")
    page.get_by_label("Finetune name").fill("browser squares")
    assert page.get_by_label("Trigger word").input_value() == "TOK"
    page.get_by_label("Training mode").select_option("style")
    page.get_by_label("Iterations").fill("12")
    page.get_by_role("button", name="Train", exact=True).click()
    # the form empties once the finetune is accepted, ready for the next one; the list (which the key's
    # first load may still be filling) then shows it by name
    page.wait_for_function("document.querySelectorAll('#train-list img').length === 0", timeout=TRAINING_TIMEOUT_MS)
    item = page.locator("#finetune-list li").filter(has_text="browser squares")
    item.wait_for(timeout=TRAINING_TIMEOUT_MS)
    finetune_id = item.get_attribute("data-finetune-id")
    item.locator(".status").filter(has_text="Training").or_(item.locator(".status").filter(has_text="Ready")).wait_for(
        timeout=TRAINING_TIMEOUT_MS
    )
    page.screenshot(path=artifacts / "12-training.png", full_page=True)

    page.locator(f"#finetune-{finetune_id}[data-status=Ready]").wait_for(timeout=4 * TRAINING_TIMEOUT_MS)
    item = page.locator(f"#finetune-{finetune_id}")
    item.locator(".gallery img").first.wait_for(timeout=TRAINING_TIMEOUT_MS)
    page.wait_for_function(
        "el => [...el.querySelectorAll('.gallery img')].some(img => img.complete && img.naturalWidth > 0)",
        arg=item.element_handle(),
        timeout=TRAINING_TIMEOUT_MS,
    )
    assert "null" not in item.inner_text()
    details = client.get("/v1/finetune_details", params={"finetune_id": finetune_id}).json()
    assert details["status"] == "Ready" and details["images"] == 3 and details["iterations"] == 12, details
    page.screenshot(path=artifacts / "13-trained.png", full_page=True)

    item.get_by_role("button", name="Generate with it").click()
    page.wait_for_function(
        f"document.getElementById('lora-{finetune_id}')?.checked === true", timeout=TRAINING_TIMEOUT_MS
    )
    assert "TOK" in page.get_by_label("Prompt").input_value()
    page.get_by_label("Steps").fill("2")
    page.locator("summary").click()
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Generate", exact=True).click()
    card = page.get_by_role("region", name="Results").locator("article.job").first
    card.wait_for(timeout=TRAINING_TIMEOUT_MS)
    page.wait_for_function("el => el.dataset.imagesShown", arg=card.element_handle(), timeout=TRAINING_TIMEOUT_MS)
    job = client.get(f"/v1/jobs/{card.get_attribute('data-job-id')}").json()
    assert job["status"] == "Ready", job
    assert finetune_id in [lora["id"] for lora in job["request"]["loras"]], job["request"]
    page.screenshot(path=artifacts / "14-generated-with-finetune.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.get_by_label("Training photos").set_input_files(photos)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"scrollWidth {width[0]} > innerWidth {width[1]} at 390 px"
    page.screenshot(path=artifacts / "15-train-phone.png", full_page=True)
    client.post("/v1/delete_finetune", json={"finetune_id": finetune_id})
