"""The bot shows one preview of the image as it forms: the first from halfway through the steps, as a photo in
reply to the job's status message, once."""

from __future__ import annotations

import asyncio
import base64

from flux_client.bot_jobs import HalfwayPreview, queued_text
from flux_client.progress import JobUpdate

CHAT, STATUS = 42, 7


class PhotoBot:
    def __init__(self):
        self.photos: list[dict] = []

    async def send_photo(self, chat_id, photo, caption=None, reply_to_message_id=None):
        self.photos.append({"chat": chat_id, "bytes": photo.data, "caption": caption, "reply_to": reply_to_message_id})


def update(step: int | None, total: int = 16, picture: bytes | None = b"jpeg-bytes") -> JobUpdate:
    preview = None
    if picture is not None and step is not None:
        preview = {"step": step, "image": "data:image/jpeg;base64," + base64.b64encode(picture).decode()}
    return JobUpdate("job", stage="denoising", step=step, total=total, preview=preview)


def test_one_preview_from_halfway_is_sent_in_reply_to_the_status_message():
    bot = PhotoBot()
    halfway = HalfwayPreview(bot, CHAT, STATUS)

    async def run():
        for step in (2, 5, 7):
            await halfway.offer(update(step, picture=f"early-{step}".encode()))
        await halfway.offer(update(9, picture=None))  # a progress without a picture
        await halfway.offer(update(10, picture=b"halfway"))
        await halfway.offer(update(14, picture=b"later"))

    asyncio.run(run())
    assert bot.photos == [{"chat": CHAT, "bytes": b"halfway", "caption": "Forming: step 10 of 16", "reply_to": STATUS}]


def test_no_preview_is_sent_for_a_job_without_previews_or_a_broken_one():
    bot = PhotoBot()
    halfway = HalfwayPreview(bot, CHAT, STATUS)
    broken = JobUpdate("job", step=12, total=16, preview={"step": 12, "image": "not a data url"})
    asyncio.run(halfway.offer(broken))
    asyncio.run(halfway.offer(update(16, picture=None)))
    assert bot.photos == []


def test_the_status_after_submit_says_when_the_images_should_be_ready():
    assert queued_text({"id": "job", "eta_s": 12.4}) == "queued, ready in about 12 s"
    assert queued_text({"id": "job", "eta_s": 0.2}) == "queued, ready in about 1 s"
    assert queued_text({"id": "job"}) == "queued", "a service that gives no estimate"
