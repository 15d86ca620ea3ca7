"""The Telegram bot end to end: a Bot API stand-in on loopback (tests/bot_api_standin.py) on one side, the
shared Serve instance (or a closed port, for "the service is down") on the other."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
from contextlib import asynccontextmanager

import pytest

from flux_client import AsyncFluxClient, JobFailed
from flux_client.bot_config import BotConfig
from flux_client.bot_signing import CallbackSigner
from flux_client.protocol import image_name
from flux_client.telegram_bot import HELP, NOT_UNDERSTOOD, PHOTO_WITHOUT_CAPTION, BotApp
from tests.bot_api_standin import BotApiStandIn, album_photos
from tests.conftest import free_port
from tests.serve.conftest import API_KEY

CHAT = 4242
TOKEN = "123456:TEST-token"
SIGNER = CallbackSigner.for_token(TOKEN)  # what the bot signs its buttons' data with, for a press made by hand
JPEG_MAGIC = b"\xff\xd8"


@asynccontextmanager
async def running_bot(flux_url: str, **settings):
    """The stand-in and the bot polling it, until the block ends."""
    async with BotApiStandIn() as telegram:
        config = BotConfig(
            token=TOKEN,
            flux_url=flux_url,
            allowed_chats=frozenset({CHAT}),
            flux_key=API_KEY,
            telegram_api_url=telegram.base_url,
            status_edit_interval_s=0.0,
            poll_interval_s=0.1,
            service_retry_delays_s=(0.2,),
        )
        app = BotApp(dataclasses.replace(config, **settings))
        polling = asyncio.create_task(app.poll(handle_signals=False))
        await telegram.wait_for(lambda: telegram.calls_of("getUpdates"))
        try:
            yield telegram
        finally:
            await app.stop()
            await asyncio.wait_for(polling, 10)


def texts_to(telegram: BotApiStandIn, method: str = "sendMessage") -> list[str]:
    return [call.params["text"] for call in telegram.calls_of(method) if call.params.get("chat_id") == CHAT]


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def status_edits(telegram: BotApiStandIn, status_text: str = "Submitting\u2026") -> list[str]:
    """The texts the status message was edited to, in order (the bot's first status message)."""
    sent = [c for c in telegram.calls_of("sendMessage") if c.params["text"] == status_text]
    assert sent, "no status message was sent"
    status_index = telegram.calls.index(sent[0])
    edits = [c for c in telegram.calls[status_index:] if c.method == "editMessageText"]
    return [c.params["text"] for c in edits]


def album_seeds(call) -> list[int]:
    return [int(caption.removeprefix("seed ")) for _, caption in album_photos(call)]


def test_a_prompt_gives_a_status_message_then_an_album_and_the_buttons_repeat_it(base_url):
    async def scenario():
        async with running_bot(base_url) as telegram:
            telegram.push_text(CHAT, "a red circle on a blue background --n 2 --seed 11")
            [album] = await telegram.wait_for(lambda: telegram.calls_of("sendMediaGroup"))
            edits = status_edits(telegram)
            assert re.fullmatch(r"queued, ready in about \d+ s", edits[0]), edits  # the submit's eta_s
            assert edits[-1].startswith("Done: 2 image(s)"), edits
            photos = album_photos(album)
            assert [caption for _, caption in photos] == ["seed 11", "seed 12"]
            assert all(data.startswith(JPEG_MAGIC) for data, _ in photos), "real JPEG images"
            buttons_message = await telegram.wait_for(
                lambda: [c for c in telegram.calls_of("sendMessage") if "reply_markup" in c.params]
            )
            [[again, more]] = buttons_message[0].params["reply_markup"]["inline_keyboard"]
            assert (again["text"], more["text"]) == ("Again", "Same seed, 4 more")
            buttons = telegram.message(CHAT, text="buttons")

            telegram.push_button(CHAT, buttons, again["callback_data"])
            await telegram.wait_for(lambda: len(telegram.calls_of("sendMediaGroup")) == 2)
            second = album_seeds(telegram.calls_of("sendMediaGroup")[1])
            assert len(second) == 2 and second != [11, 12], "Again draws a new seed"
            assert telegram.calls_of("answerCallbackQuery"), "the button press is answered"

            telegram.push_button(CHAT, buttons, more["callback_data"])
            await telegram.wait_for(lambda: len(telegram.calls_of("sendMediaGroup")) == 3)
            assert album_seeds(telegram.calls_of("sendMediaGroup")[2]) == [13, 14, 15, 16], "the series goes on"

    asyncio.run(scenario())


def button(menu_call, text: str) -> str:
    """The callback data of the button labelled `text` in a sent message's keyboard."""
    rows = menu_call.params["reply_markup"]["inline_keyboard"]
    return next(b["callback_data"] for row in rows for b in row if b["text"].removeprefix("\u2713 ") == text)


def test_settings_menu_choices_apply_to_the_next_prompts_of_the_chat(base_url):
    async def scenario():
        async with running_bot(base_url) as telegram:
            telegram.push_text(CHAT, "/settings")
            [menu] = await telegram.wait_for(
                lambda: [c for c in telegram.calls_of("sendMessage") if c.params["text"].startswith("Settings")]
            )
            menu_message = telegram.message(CHAT, text=menu.params["text"])
            telegram.push_button(CHAT, menu_message, button(menu, "9b"))
            telegram.push_button(CHAT, menu_message, button(menu, "n=2"))
            await telegram.wait_for(lambda: len(telegram.calls_of("editMessageText")) == 2)
            assert "images per prompt: 2" in telegram.calls_of("editMessageText")[-1].params["text"]

            telegram.push_text(CHAT, "/gen a green square on a white background --seed 5")
            [album] = await telegram.wait_for(lambda: telegram.calls_of("sendMediaGroup"))
            assert album_seeds(album) == [5, 6], "n=2 from the settings"
            summary = await telegram.wait_for(lambda: [t for t in texts_to(telegram) if "\u00b7 seeds" in t])
            assert summary[0].startswith("flux-2-klein-9b"), summary

    asyncio.run(scenario())


def test_the_status_message_carries_cancel_and_the_cancel_button_stops_the_job(base_url):
    async def scenario():
        async with running_bot(base_url) as telegram:
            telegram.push_text(CHAT, "a blue square on a red background")
            await telegram.wait_for(lambda: telegram.calls_of("sendMediaGroup") + telegram.calls_of("sendPhoto"))
            queued = next(c for c in telegram.calls_of("editMessageText") if c.params["text"].startswith("queued"))
            [[cancel]] = queued.params["reply_markup"]["inline_keyboard"]
            assert cancel["text"] == "Cancel" and cancel["callback_data"].startswith("cancel:")

            async with AsyncFluxClient(base_url, API_KEY) as flux:
                long_job = await flux.submit("a red circle", width=1024, height=1024, steps=40)
                telegram.push_button(
                    CHAT, telegram.message(CHAT, text="status"), SIGNER.sign(CHAT, f"cancel:{long_job}")
                )
                await telegram.wait_for(
                    lambda: [c for c in telegram.calls_of("answerCallbackQuery") if "Cancelling" in c.params["text"]]
                )
                with pytest.raises(JobFailed) as failed:
                    await flux.wait(long_job, timeout_s=60)
            assert failed.value.status == "Cancelled"

    asyncio.run(scenario())


def test_chats_outside_the_allow_list_are_refused_politely():
    async def scenario():
        async with running_bot(closed_port_url(), allowed_chats=frozenset({1})) as telegram:
            telegram.push_text(CHAT, "a red circle")
            [refusal] = await telegram.wait_for(lambda: texts_to(telegram))
            assert refusal.startswith("Sorry, this bot only works in the chats its owner has allowed")
            assert str(CHAT) in refusal, "the owner learns which id to allow"
            await asyncio.sleep(0.3)
            assert texts_to(telegram) == [refusal] and not telegram.calls_of("editMessageText"), "nothing else"

    asyncio.run(scenario())


def test_service_down_is_said_clearly_and_the_bot_keeps_answering():
    async def scenario():
        async with running_bot(closed_port_url(), max_jobs_per_chat=1, service_retry_delays_s=(1.0,)) as telegram:
            telegram.push_text(CHAT, "a red circle on a blue background")
            await telegram.wait_for(lambda: any("retrying in 1 s" in t for t in texts_to(telegram, "editMessageText")))
            telegram.push_text(CHAT, "a second prompt while the first one waits")
            await telegram.wait_for(lambda: any("already running in this chat" in t for t in texts_to(telegram)))
            await telegram.wait_for(
                lambda: any("image service is down" in t for t in texts_to(telegram, "editMessageText"))
            )

            telegram.push_sticker(CHAT)
            telegram.push_button(CHAT, telegram.message(CHAT, text="old"), "nonsense")
            telegram.push_text(CHAT, "/gen a fox --n")
            telegram.push_text(CHAT, "/help")
            await telegram.wait_for(lambda: HELP in texts_to(telegram))
            answers = texts_to(telegram)
            assert NOT_UNDERSTOOD in answers, "a sticker gets a hint, not a crash"
            assert "--n needs a value, e.g. --n 4." in answers
            [answer] = telegram.calls_of("answerCallbackQuery")
            assert "no longer works" in answer.params["text"]

    asyncio.run(scenario())


def jpeg_photo(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def album_job_ids(telegram: BotApiStandIn) -> list[str]:
    """The job ids under the albums sent so far (from their Again buttons), in order."""
    keyboards = [
        c.params["reply_markup"]["inline_keyboard"]
        for c in telegram.calls_of("sendMessage")
        if "reply_markup" in c.params
    ]
    data = [SIGNER.verify(CHAT, rows[0][0]["callback_data"]) or "" for rows in keyboards]
    return [d.removeprefix("again:") for d in data if d.startswith("again:")]


def choose_two_images_per_prompt(telegram: BotApiStandIn):
    """Open /settings and press n=2; returns once the menu shows it."""

    async def choose():
        telegram.push_text(CHAT, "/settings")
        [menu] = await telegram.wait_for(
            lambda: [c for c in telegram.calls_of("sendMessage") if c.params["text"].startswith("Settings")]
        )
        telegram.push_button(CHAT, telegram.message(CHAT, text=menu.params["text"]), button(menu, "n=2"))
        await telegram.wait_for(lambda: telegram.calls_of("editMessageText"))

    return choose()


def test_a_photo_with_a_caption_is_edited_into_an_album_and_again_edits_the_same_photo(base_url):
    async def scenario():
        async with running_bot(base_url) as telegram, AsyncFluxClient(base_url, API_KEY) as flux:
            await choose_two_images_per_prompt(telegram)
            largest = telegram.push_photo(
                CHAT, "make the background yellow", jpeg_photo((96, 64)), size=(96, 64), thumbnail=jpeg_photo((16, 16))
            )
            [album] = await telegram.wait_for(lambda: telegram.calls_of("sendMediaGroup"))
            photos = album_photos(album)
            assert len(photos) == 2 and all(data.startswith(JPEG_MAGIC) for data, _ in photos), "n=2 as configured"
            assert status_edits(telegram)[-1].startswith("Done: 2 image(s)")
            assert [c.params["file_id"] for c in telegram.calls_of("getFile")] == [largest], "the largest size only"

            [job_id] = await telegram.wait_for(lambda: album_job_ids(telegram))
            job = await flux.job(job_id)
            assert job["request"]["prompt"] == "make the background yellow"
            assert len(job["references"]) == 1, "the photo went in as input_image"
            [reference] = await flux.reference_bytes(job)
            assert png_size(reference) == (96, 64), "the full-size photo, not the thumbnail"

            buttons = telegram.message(CHAT, text="buttons")
            telegram.push_button(CHAT, buttons, SIGNER.sign(CHAT, f"again:{job_id}"))
            await telegram.wait_for(lambda: len(telegram.calls_of("sendMediaGroup")) == 2)
            again = await flux.job((await telegram.wait_for(lambda: album_job_ids(telegram)[1:]))[0])
            assert [image_name(url) for url in again["references"]] == [image_name(url) for url in job["references"]]
            assert again["seed"] != job["seed"], "Again: the same photo, a new seed"

    asyncio.run(scenario())


def test_an_album_with_one_caption_is_one_edit_of_all_its_photos(base_url):
    async def scenario():
        async with running_bot(base_url, album_wait_s=0.5) as telegram, AsyncFluxClient(base_url, API_KEY) as flux:
            telegram.push_photo(CHAT, "the circle inside the square", jpeg_photo(), media_group_id="album1")
            telegram.push_photo(CHAT, None, jpeg_photo(colour=(30, 30, 200)), media_group_id="album1")
            await telegram.wait_for(lambda: telegram.calls_of("sendPhoto"))
            [job_id] = await telegram.wait_for(lambda: album_job_ids(telegram))
            assert len((await flux.job(job_id))["references"]) == 2, "both photos as input images"
            assert len(telegram.calls_of("getFile")) == 2
            assert PHOTO_WITHOUT_CAPTION not in texts_to(telegram), "the uncaptioned photo belongs to the album"
            assert [t for t in texts_to(telegram) if t == "Submitting\u2026"] == ["Submitting\u2026"], "one job"

    asyncio.run(scenario())


def test_a_photo_without_a_caption_or_an_album_too_large_is_answered_with_what_to_send():
    async def scenario():
        async with running_bot(closed_port_url(), album_wait_s=0.3) as telegram:
            telegram.push_photo(CHAT, None, jpeg_photo())
            await telegram.wait_for(lambda: PHOTO_WITHOUT_CAPTION in texts_to(telegram))
            for index in range(5):
                telegram.push_photo(CHAT, "all of these" if index == 0 else None, jpeg_photo(), media_group_id="big")
            [too_many] = await telegram.wait_for(lambda: [t for t in texts_to(telegram) if "album has 5 photos" in t])
            assert "up to 4" in too_many
            assert not telegram.calls_of("getFile"), "nothing fetched for a message the bot cannot use"

    asyncio.run(scenario())


def test_webhook_mode_registers_its_url_and_takes_only_updates_carrying_the_secret():
    from aiohttp import ClientSession, web

    async def scenario():
        async with BotApiStandIn() as telegram:
            port = free_port()
            config = BotConfig(
                token=TOKEN,
                flux_url=closed_port_url(),
                allowed_chats=frozenset({CHAT}),
                telegram_api_url=telegram.base_url,
                webhook_url="https://bot.example/tg/hook",
                webhook_listen=("127.0.0.1", port),
                webhook_secret="s3cret-token",
            )
            runner = web.AppRunner(BotApp(config).webhook_app())
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                [registered] = await telegram.wait_for(lambda: telegram.calls_of("setWebhook"))
                assert registered.params["url"] == config.webhook_url
                assert registered.params["secret_token"] == "s3cret-token"
                update = {"update_id": 1, "message": telegram.message(CHAT, text="/help")}
                async with ClientSession() as http:
                    forged = await http.post(f"http://127.0.0.1:{port}/tg/hook", json=update)
                    assert forged.status == 401, "an update without Telegram's secret is refused"
                    genuine = await http.post(
                        f"http://127.0.0.1:{port}/tg/hook",
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"},
                    )
                    assert genuine.status == 200
                await telegram.wait_for(lambda: HELP in texts_to(telegram))
                assert texts_to(telegram) == [HELP]
            finally:
                await runner.cleanup()

    asyncio.run(scenario())
