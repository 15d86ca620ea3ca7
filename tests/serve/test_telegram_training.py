"""The Telegram bot's /train flow end to end: photos through the Bot API stand-in (tests/bot_api_standin.py), a
finetune trained by the shared Serve instance, then /gen with it; and the answers to training input a chat gets
wrong."""

from __future__ import annotations

import asyncio
import functools
import io

from flux_client import AsyncFluxClient
from flux_client.telegram_bot import PHOTO_WITHOUT_CAPTION
from tests.bot_api_standin import BotApiStandIn
from tests.serve.conftest import API_KEY
from tests.serve.test_telegram_bot import (
    CHAT,
    JPEG_MAGIC,
    SIGNER,
    album_job_ids,
    closed_port_url,
    jpeg_photo,
    running_bot,
    status_edits,
    texts_to,
)


def png_square(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def sent_photos(telegram: BotApiStandIn, caption_start: str) -> list:
    return [c for c in telegram.calls_of("sendPhoto") if (c.params.get("caption") or "").startswith(caption_start)]


def test_train_collects_photos_done_follows_the_training_to_ready_and_gen_uses_the_finetune(base_url):
    """Issue 27 from a chat: /train, 3 photos, /done; the status message is edited while it trains, a sample
    comes as a photo, Ready says how to use it; /gen --finetune draws with it, Again keeps it; /forget deletes it."""

    async def scenario():
        settings = {"training_poll_interval_s": 0.5, "training_status_interval_s": 1.0, "album_wait_s": 0.3}
        async with running_bot(base_url, **settings) as telegram, AsyncFluxClient(base_url, API_KEY) as flux:
            finetune_id = None
            try:
                telegram.push_text(CHAT, "/train bot squares --iterations 12")
                await telegram.wait_for(lambda: [t for t in texts_to(telegram) if t.startswith("Collecting photos")])
                for index, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
                    caption = "a TOK square" if index == 0 else None
                    telegram.push_photo(CHAT, caption, png_square(colour), media_group_id="set")
                await telegram.wait_for(lambda: [t for t in texts_to(telegram) if t.startswith("3 photos for")])
                assert PHOTO_WITHOUT_CAPTION not in texts_to(telegram), "while collecting, photos are not edits"
                assert not telegram.calls_of("sendMediaGroup"), "nor drawn"

                telegram.push_text(CHAT, "/done")
                [ready] = await telegram.wait_for(
                    lambda: [t for t in texts_to(telegram) if "is Ready" in t], timeout_s=240
                )
                finetune_id = ready.split("--finetune ", 1)[1].split()[0]
                details = await flux.finetune_details(finetune_id)
                assert details["images"] == 3 and details["iterations"] == 12 and details["status"] == "Ready"
                assert details["finetune_comment"] == "bot squares" and details["captions_written"] == 2
                assert f"/gen a photo of TOK --finetune {finetune_id}" in ready
                edits = status_edits(telegram, "Sending 3 photos for \u201cbot squares\u201d\u2026")
                assert any(" of 12" in edit for edit in edits), edits
                assert edits[-1] == "Training \u201cbot squares\u201d (3 photos): Ready", edits
                samples = sent_photos(telegram, "Sample of \u201cbot squares\u201d")
                assert 1 <= len(samples) <= 4 and all(s.params["photo"].startswith(b"\x89PNG") for s in samples)

                telegram.push_text(CHAT, f"/gen a TOK square --finetune {finetune_id} --seed 3")
                [drawn] = await telegram.wait_for(lambda: sent_photos(telegram, "seed 3"))
                assert drawn.params["photo"].startswith(JPEG_MAGIC)
                [job_id] = await telegram.wait_for(lambda: album_job_ids(telegram))
                job = await flux.job(job_id)
                assert [lora["id"] for lora in job["request"]["loras"]] == [finetune_id]
                assert job["request"]["loras"][0]["scale"] == details["default_strength"], "its measured default"

                telegram.push_button(CHAT, telegram.message(CHAT, text="buttons"), SIGNER.sign(CHAT, f"again:{job_id}"))
                [again_id] = await telegram.wait_for(lambda: album_job_ids(telegram)[1:])
                again = await flux.job(again_id)
                assert again["request"]["loras"] == job["request"]["loras"], "Again keeps the finetune"

                telegram.push_text(CHAT, "/finetunes")
                await telegram.wait_for(lambda: [t for t in texts_to(telegram) if "\u2022 bot squares: Ready" in t])
                telegram.push_text(CHAT, f"/forget {finetune_id}")
                await telegram.wait_for(lambda: f"Deleted finetune {finetune_id}" in " ".join(texts_to(telegram)))
                assert finetune_id not in await flux.my_finetunes()
                finetune_id = None
            finally:
                if finetune_id:  # a failure above: leave the key's finetunes as they were for the other tests
                    await flux.delete_finetune(finetune_id)

    asyncio.run(scenario())


def test_training_input_a_chat_gets_wrong_is_answered_with_what_to_do():
    """No service needed until /done: each mistake gets a reply saying what to do, and nothing is fetched from
    Telegram that the bot cannot use."""

    async def scenario():
        async with running_bot(closed_port_url(), album_wait_s=0.2) as telegram:

            async def answer_to(send, expected: str) -> None:
                """Send a text (or call `send`), then wait for a new message containing `expected`."""
                seen = len(texts_to(telegram))
                telegram.push_text(CHAT, send) if isinstance(send, str) else send()
                await telegram.wait_for(lambda: [t for t in texts_to(telegram)[seen:] if expected in t])

            document = functools.partial(telegram.push_document, CHAT)
            await answer_to("/done", "Nothing to train yet: /train [name] starts collecting photos")
            await answer_to("/train --mode edit", "--mode takes general, character, style, product")
            await answer_to("/train squares", "Send 1-50 photos (more than 5 is better; albums are fine), then /done")
            await answer_to("/train again", "already collecting photos for \u201csquares\u201d (0 so far)")
            await answer_to("/done", "No photos yet for \u201csquares\u201d")
            pdf = functools.partial(document, b"%PDF-1.7", "notes.pdf", "application/pdf")
            await answer_to(pdf, "I left out the file notes.pdf: it is not an image")
            huge = functools.partial(document, png_square((1, 2, 3)), "huge.png", "image/png", file_size=30 * 2**20)
            await answer_to(huge, "That file is 30.0 MB; each photo may be up to 20.0 MB")
            assert not telegram.calls_of("getFile"), "refused before any download"
            fake = functools.partial(document, b"not a png at all", "fake.png", "image/png")
            await answer_to(fake, "I left out the file fake.png: it is not a JPEG, PNG or WebP image")
            await answer_to(
                functools.partial(telegram.push_photo, CHAT, None, jpeg_photo()), "1 photo for \u201csquares"
            )
            assert PHOTO_WITHOUT_CAPTION not in texts_to(telegram), "while collecting, a photo is not an edit"

            await answer_to("/done", "Sending 1 photo for \u201csquares\u201d")
            await telegram.wait_for(
                lambda: [t for t in texts_to(telegram, "editMessageText") if "I keep the 1 photo" in t]
            )
            await answer_to("/cancel", "Dropped the 1 photo collected for \u201csquares\u201d")
            await answer_to("/cancel", "Nothing to cancel")
            await answer_to("/forget", "Say which: /forget ID")
            await answer_to("/gen a TOK --finetune :1.2", "has no id; write ID or ID:STRENGTH")

    asyncio.run(scenario())
