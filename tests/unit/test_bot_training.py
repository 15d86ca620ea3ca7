"""Fine-tuning from the bot without a server or Telegram (issue 27): /train's options and /gen's --finetune,
a chat's collection of photos (caps, expiry), the texts a chat reads, the status message's throttle on an
injected clock, a followed training (edits, samples, its end) against stand-ins, and the client's multipart
finetune from bytes (httpx.MockTransport)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flux_client import AsyncFluxClient
from flux_client.bot_config import BotConfig
from flux_client.bot_jobs import StatusMessage
from flux_client.bot_options import ChatSettings, OptionError, parse_prompt
from flux_client.bot_training import (
    MAX_SAMPLE_PHOTOS,
    CollectionRefused,
    Collections,
    Photo,
    TrainOptions,
    collected_text,
    finetunes_text,
    image_suffix,
    nothing_to_train_text,
    outcome_text,
    parse_train,
    sample_caption,
    training_status_text,
)
from flux_client.bot_training_chat import TrainingChat

TOKEN = "123456:TEST-token"
CHAT, OTHER_CHAT = 4242, 77
FT_ID = "f" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 96
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 92


class FakeClock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def photo(size_bytes: int = 100, caption: str | None = None) -> Photo:
    return Photo(JPEG[:4] + b"x" * (size_bytes - 4), ".jpg", caption)


# -- options ---------------------------------------------------------------------------------------


def test_train_options_name_mode_trigger_and_iterations_in_any_order_and_phone_dashes():
    assert parse_train(None) == TrainOptions()
    assert parse_train("my cat --mode character \u2014trigger CATTO --iterations=200") == TrainOptions(
        name="my cat", mode="character", trigger_word="CATTO", iterations=200
    )
    assert parse_train("--iterations 12 squares") == TrainOptions(name="squares", iterations=12)


@pytest.mark.parametrize(
    "text, says",
    [
        ("x --mode edit", "--mode takes general, character, style, product (got 'edit')"),
        ("x --mode", "(got 'nothing')"),
        ("x --trigger 9lives", "--trigger takes one word"),
        ("x --iterations 5", "from 10 to 2000 (got '5')"),
        ("x --iterations many", "(got 'many')"),
        ("x --steps 10", "Unknown option --steps; /train takes --mode, --trigger, --iterations"),
        ("n" * 201, "keep it to 200"),
    ],
)
def test_train_options_that_the_service_would_refuse_are_refused_before_any_photo_is_sent(text, says):
    with pytest.raises(OptionError) as refused:
        parse_train(text)
    assert says in str(refused.value)


def test_gen_takes_one_finetune_with_or_without_a_strength():
    submission = parse_prompt(f"a TOK square --finetune {FT_ID}:1.2 --n 2", ChatSettings())
    assert (submission.prompt, submission.finetune, submission.finetune_strength) == ("a TOK square", FT_ID, 1.2)
    assert submission.fields()["finetune"] == FT_ID and submission.fields()["finetune_strength"] == 1.2
    plain = parse_prompt(f"a TOK square --finetune {FT_ID}", ChatSettings())
    assert (plain.finetune, plain.finetune_strength) == (FT_ID, None), "None: its measured default"
    assert parse_prompt("a fox", ChatSettings()).fields()["finetune"] is None
    with pytest.raises(OptionError, match="Give --finetune once"):
        parse_prompt(f"a TOK --finetune {FT_ID} --finetune other", ChatSettings())
    with pytest.raises(OptionError, match="must be a number"):
        parse_prompt(f"a TOK --finetune {FT_ID}:strong", ChatSettings())
    with pytest.raises(OptionError, match="--finetune needs a value, e.g. --finetune ID:1.2"):
        parse_prompt("a TOK --finetune", ChatSettings())
    with pytest.raises(OptionError, match="No finetune trained in this chat has finished yet"):
        parse_prompt("a TOK --finetune last", ChatSettings())
    last = parse_prompt("a TOK --finetune last:0.8", ChatSettings(last_finetune=FT_ID))
    assert (last.finetune, last.finetune_strength) == (FT_ID, 0.8)


# -- the collection --------------------------------------------------------------------------------


def test_image_bytes_are_known_by_their_signature_not_their_name():
    assert image_suffix(JPEG) == ".jpg" and image_suffix(PNG) == ".png"
    assert image_suffix(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == ".webp"
    assert image_suffix(b"%PDF-1.7") is None and image_suffix(b"") is None


def test_a_collection_names_its_files_in_order_with_a_caption_beside_its_photo():
    collections = Collections(clock=FakeClock())
    collections.start(CHAT, TrainOptions(), "squares")
    collections.add(CHAT, Photo(JPEG, ".jpg", "a TOK square"))
    assert collections.add(CHAT, Photo(PNG, ".png", None)) == 2
    assert collections.open(CHAT).files() == {
        "photo_01.jpg": JPEG,
        "photo_01.txt": b"a TOK square",
        "photo_02.png": PNG,
    }
    assert collections.open(OTHER_CHAT) is None, "per chat"


def test_collection_caps_on_photos_on_one_photo_on_a_chats_bytes_and_on_every_chats_bytes():
    collections = Collections(clock=FakeClock(), max_photos=2, max_photo_bytes=500, max_chat_bytes=800)
    collections.start(CHAT, TrainOptions(), "squares")
    with pytest.raises(CollectionRefused, match="up to 0.0 MB") as too_big:
        collections.check_room(CHAT, 501)
    assert too_big.value.cap is None, "a file too big is said each time: each is a different file"
    collections.add(CHAT, photo(400))
    with pytest.raises(CollectionRefused, match="would pass") as over_bytes:
        collections.add(CHAT, photo(401))
    assert over_bytes.value.cap == "bytes"
    collections.add(CHAT, photo(400))
    with pytest.raises(CollectionRefused, match="already has 2 photos") as full:
        collections.check_room(CHAT, 1)
    assert full.value.cap == "photos" and len(collections.open(CHAT).photos) == 2

    shared = Collections(clock=FakeClock(), max_chat_bytes=800, max_held_bytes=1000)
    shared.start(CHAT, TrainOptions(), "one")
    shared.start(OTHER_CHAT, TrainOptions(), "two")
    shared.add(CHAT, photo(600))
    with pytest.raises(CollectionRefused, match="too many photos for trainings") as held:
        shared.add(OTHER_CHAT, photo(600))
    assert held.value.cap == "held"


def test_a_collection_left_idle_is_dropped_and_the_chat_is_told_once_then_a_sending_one_stays():
    clock = FakeClock()
    collections = Collections(clock=clock, idle_s=1800)
    collections.start(CHAT, TrainOptions(), "squares")
    clock.now_s += 1000
    collections.add(CHAT, photo())
    clock.now_s += 1799
    assert collections.open(CHAT) is not None, "idle counts from the last photo"
    clock.now_s += 1
    assert collections.open(CHAT) is None
    assert collections.expired_name(CHAT) == "squares" and collections.expired_name(CHAT) is None
    with pytest.raises(CollectionRefused, match="/train starts again"):
        collections.check_room(CHAT, 1)

    sending = collections.start(CHAT, TrainOptions(), "sent")
    collections.add(CHAT, photo())
    sending.submitting = True
    clock.now_s += 3600
    assert collections.open(CHAT) is sending, "photos being sent are not dropped under the upload"
    with pytest.raises(CollectionRefused, match="being sent"):
        collections.check_room(CHAT, 1)


# -- texts -----------------------------------------------------------------------------------------


def test_the_texts_a_chat_reads():
    collections = Collections(clock=FakeClock())
    collection = collections.start(CHAT, TrainOptions(), "squares")
    collections.add(CHAT, photo(2**20))
    assert collected_text(collection).startswith("1 photo for \u201csquares\u201d (1.0 MB). Send more, or /done")
    assert "dropped after 30 minutes" in nothing_to_train_text("squares")
    assert nothing_to_train_text(None).startswith("Nothing to train yet: /train [name]")

    queued = {"status": "Pending", "images": 3, "progress": None}
    assert training_status_text("squares", FT_ID, queued) == (
        f"Training \u201csquares\u201d (3 photos): waiting for a trainer\u2026\n/forget {FT_ID} stops and deletes it."
    )
    step = {"status": "Pending", "images": 3, "progress": {"step": 4, "total": 12, "eta_s": 20.4}}
    assert "step 4 of 12, about 20 s left" in training_status_text("squares", FT_ID, step)
    long = {"status": "Pending", "images": 3, "progress": {"step": 4, "total": 300, "eta_s": 600}}
    assert "about 10 min left" in training_status_text("squares", FT_ID, long)
    ready = {"status": "Ready", "images": 3, "trigger_word": "ZED", "default_strength": 1.1}
    assert "/forget" not in training_status_text("squares", FT_ID, ready)
    usage = outcome_text("squares", FT_ID, ready)
    assert f"/gen a photo of ZED --finetune {FT_ID}\n" in usage and "default strength is 1.1" in usage
    error = outcome_text("squares", FT_ID, {"status": "Error", "error": "the trainer ran out of memory"})
    assert error.startswith("Training \u201csquares\u201d ended Error: the trainer ran out of memory.")
    assert sample_caption("squares", "00004.png", {"iterations": 12}) == "Sample of \u201csquares\u201d at step 4 of 12"
    listed = finetunes_text(
        [{"finetune_id": FT_ID, "finetune_comment": "squares", "status": "Ready", "trigger_word": "TOK"}]
    )
    assert f"\u2022 squares: Ready, trigger word TOK\n  {FT_ID}" in listed
    assert finetunes_text([]).startswith("No finetunes yet")


# -- the status message and a followed training ---------------------------------------------------


class FakeBot:
    """Records what the bot would send to Telegram."""

    def __init__(self):
        self.edits: list[str] = []
        self.photos: list[tuple[bytes, str]] = []

    async def edit_message_text(self, text, chat_id, message_id, reply_markup=None):
        self.edits.append(text)

    async def send_photo(self, chat_id, photo, caption=None):
        self.photos.append((photo.data, caption))


def test_the_status_message_is_edited_at_most_once_per_interval_unless_forced():
    clock, bot = FakeClock(), FakeBot()
    status = StatusMessage(bot, CHAT, 1, interval_s=5.0, clock=clock)

    async def scenario():
        await status.show("step 1 of 12")
        clock.now_s += 2
        await status.show("step 2 of 12")  # too soon: skipped
        clock.now_s += 3
        await status.show("step 3 of 12")
        await status.show("step 3 of 12")  # the same text: skipped
        clock.now_s += 1
        await status.show("Ready", force=True)

    asyncio.run(scenario())
    assert bot.edits == ["step 1 of 12", "step 3 of 12", "Ready"]


class FakeFlux:
    """finetune_details answers from a script, one per call (the last repeats); samples as PNG bytes."""

    def __init__(self, answers: list[dict], clock: FakeClock, step_s: float):
        self.answers, self.clock, self.step_s = answers, clock, step_s

    async def finetune_details(self, finetune_id):
        self.clock.now_s += self.step_s
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def image_bytes(self, job):
        return [f"png of {job['images'][0]}".encode()]


class FakeRunner:
    def __init__(self, bot, flux, config):
        self.bot, self.flux, self.config, self.said = bot, flux, config, []

    async def say(self, chat_id, text, keyboard=None):
        self.said.append(text)
        return 1


def pending(step: int, samples: int) -> dict:
    urls = [f"http://flux.test/v1/finetunes/{FT_ID}/samples/{4 * n:05d}.png?exp=1&sig=s" for n in range(samples)]
    return {
        "status": "Pending",
        "images": 3,
        "iterations": 40,
        "progress": {"step": step, "total": 40, "eta_s": 40 - step},
        "samples": urls,
    }


def test_a_followed_training_edits_its_status_every_few_seconds_sends_a_few_samples_and_says_how_to_use_it():
    clock, bot = FakeClock(), FakeBot()
    answers = [pending(step, samples=1 + step // 4) for step in range(0, 40, 2)]  # a new sample every 4 steps
    ready = {**pending(40, samples=11), "status": "Ready", "trigger_word": "TOK", "default_strength": 1.0}
    flux = FakeFlux([*answers, ready], clock, step_s=1.0)  # a poll each second of the fake clock
    config = BotConfig(
        token=TOKEN, allowed_chats=frozenset({CHAT}), training_poll_interval_s=0, training_status_interval_s=5.0
    )
    runner = FakeRunner(bot, flux, config)
    settings = {CHAT: ChatSettings()}
    training = TrainingChat(runner, settings, clock=clock)
    status = StatusMessage(bot, CHAT, 1, config.training_status_interval_s, clock)

    asyncio.run(training.follow(CHAT, status, FT_ID, "squares"))
    assert parse_prompt("a TOK --finetune last:1.5", settings[CHAT]).finetune == FT_ID, "the chat's last, once Ready"
    assert len(answers) + 1 == 21 and 4 <= len(bot.edits) <= 6, f"about one edit per 5 polls: {bot.edits}"
    assert bot.edits[0].startswith("Training \u201csquares\u201d (3 photos): step 0 of 40")
    assert bot.edits[-1] == "Training \u201csquares\u201d (3 photos): Ready", "the end is shown at once"
    assert len(bot.photos) == MAX_SAMPLE_PHOTOS
    captions = [caption for _, caption in bot.photos]
    assert captions[-1] == "Sample of \u201csquares\u201d at step 40 of 40", "the last slot kept for the final sample"
    assert captions[0] == "Sample of \u201csquares\u201d at step 0 of 40"
    [usage] = runner.said
    assert f"/gen a photo of TOK --finetune {FT_ID}" in usage


def test_a_training_deleted_while_followed_ends_the_following_with_what_happened():
    from flux_client.errors import FluxAPIError

    clock, bot = FakeClock(), FakeBot()

    class Deleted(FakeFlux):
        async def finetune_details(self, finetune_id):
            raise FluxAPIError(404, f"No finetune {finetune_id!r}")

    config = BotConfig(token=TOKEN, allowed_chats=frozenset({CHAT}), training_poll_interval_s=0)
    runner = FakeRunner(bot, Deleted([], clock, 0), config)
    training = TrainingChat(runner, {}, clock=clock)
    asyncio.run(training.follow(CHAT, StatusMessage(bot, CHAT, 1, 5.0, clock), FT_ID, "squares"))
    assert bot.edits == ["Training \u201csquares\u201d was stopped and deleted."] and not runner.said


# -- the client: a finetune from bytes -------------------------------------------------------------


def test_create_finetune_from_bytes_sends_a_multipart_form_of_the_files_and_the_settings_given():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"], seen["type"] = request.url.path, request.headers["content-type"]
        seen["body"] = request.read()
        return httpx.Response(200, json={"finetune_id": FT_ID, "id": FT_ID, "polling_url": "u"})

    async def scenario():
        async with AsyncFluxClient("http://flux.test", "k", transport=httpx.MockTransport(handler)) as flux:
            files = {"photo_01.jpg": JPEG, "photo_01.txt": b"a TOK square"}
            return await flux.create_finetune_from_bytes(files, "squares", mode="style", iterations=12, model=None)

    assert asyncio.run(scenario()) == FT_ID
    assert seen["path"] == "/v1/finetune" and seen["type"].startswith("multipart/form-data")
    body = seen["body"]
    for part in (
        b'name="finetune_comment"\r\n\r\nsquares',
        b'name="mode"\r\n\r\nstyle',
        b'name="iterations"\r\n\r\n12',
    ):
        assert part in body, part
    assert b'name="model"' not in body, "None: the server's default"
    assert b'filename="photo_01.jpg"' in body and JPEG in body and b'filename="photo_01.txt"' in body


def test_the_flood_gate_lets_a_trainings_photos_through_uncounted_while_its_collection_has_room(monkeypatch):
    import datetime

    from aiogram.types import Chat, Message, PhotoSize

    from flux_client.telegram_bot import FloodGate

    handled, answers = [], []

    async def handler(event, data):
        handled.append(event.message_id)

    async def answer(self, text, **kwargs):
        answers.append(text)

    monkeypatch.setattr(Message, "answer", answer)
    config = BotConfig(token=TOKEN, allow_anyone=True, updates_per_minute=3)
    training = TrainingChat(FakeRunner(None, None, config), {})
    training.collections.start(CHAT, TrainOptions(), "squares")
    gate = FloodGate(config, clock=FakeClock(), exempt=training.takes_photo)
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    size = PhotoSize(file_id="p", file_unique_id="p", width=64, height=64)

    def message(index: int, chat_id: int = CHAT, **content) -> Message:
        return Message(message_id=index, date=when, chat=Chat(id=chat_id, type="private"), **content)

    async def scenario():
        for index in range(10):
            await gate(handler, message(index, photo=[size]), {})
        for index in range(10, 15):
            await gate(handler, message(index, chat_id=OTHER_CHAT, photo=[size]), {})  # not collecting
        for index in range(15, 20):
            await gate(handler, message(index, text="a prompt"), {})

        training.collections.max_photos = 0  # full: its photos count again
        for index in range(20, 25):
            await gate(handler, message(index, photo=[size]), {})

    asyncio.run(scenario())
    assert handled == [*range(10), 10, 11, 12, 15, 16, 17], "photos of a collecting chat pass; the rest is counted"
    assert len(answers) == 2, "one flood notice for each chat"
