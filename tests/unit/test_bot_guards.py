"""The bot's guards without a server or Telegram: callback data signed for its chat, per-chat rate limits
(one refusal, then quiet drops), the flood gate in front of the handlers."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from flux_client.bot_config import BotConfig
from flux_client.bot_jobs import JobRunner
from flux_client.bot_keyboards import Buttons, album_keyboard, parse_callback, running_keyboard, settings_keyboard
from flux_client.bot_limits import ChatRateLimit, Verdict
from flux_client.bot_options import ChatSettings, Submission
from flux_client.bot_signing import CallbackSigner

TOKEN = "123456:TEST-token"
CHAT, OTHER_CHAT = 4242, -100987654321
JOB_ID = "f" * 32


class FakeClock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def every_button(keyboard):
    return [button for row in keyboard.inline_keyboard for button in row]


def test_buttons_are_signed_for_their_chat_and_fit_64_bytes_with_the_longest_arguments():
    buttons = Buttons(CallbackSigner.for_token(TOKEN), OTHER_CHAT)  # the longest chat id
    models = ["flux-2-klein-4b", "flux-2-klein-9b", "m" * 60]
    keyboards = [
        running_keyboard(buttons, JOB_ID),
        album_keyboard(buttons, JOB_ID),
        settings_keyboard(ChatSettings(), models, buttons),
    ]
    data = [button.callback_data for keyboard in keyboards for button in every_button(keyboard)]
    assert all(len(d.encode()) <= 64 for d in data), max(data, key=len)
    assert not any("m" * 60 in d for d in data), "a model id too long for a button is left out, not sent broken"
    assert all(d.count("|") == 1 for d in data), data


def test_a_callback_only_works_in_the_chat_it_was_signed_for():
    signer = CallbackSigner.for_token(TOKEN)
    signed = signer.sign(CHAT, f"cancel:{JOB_ID}")
    assert parse_callback(signed, signer, CHAT) == ("cancel", JOB_ID)
    assert parse_callback(signed, signer, OTHER_CHAT) == ("", ""), "another chat's button"
    assert parse_callback(f"cancel:{JOB_ID}", signer, CHAT) == ("", ""), "unsigned, as a forged update sends it"
    forged = signed.replace(JOB_ID, "e" * 32)
    assert parse_callback(forged, signer, CHAT) == ("", ""), "another job id under the same signature"
    assert parse_callback(signed, CallbackSigner.for_token("999:other"), CHAT) == ("", ""), "another bot's key"
    with pytest.raises(ValueError, match="must fit Telegram's 64"):
        signer.sign(CHAT, "set:model=" + "m" * 60)


def test_a_rate_limit_refuses_once_then_drops_quietly_until_the_window_passes():
    clock = FakeClock()
    limit = ChatRateLimit(2, 60.0, clock=clock)
    assert [limit.check(CHAT) for _ in range(5)] == [Verdict.ALLOW] * 2 + [Verdict.REFUSE] + [Verdict.DROP] * 2
    assert limit.check(OTHER_CHAT) is Verdict.ALLOW, "per chat"
    assert limit.retry_after_s(CHAT) == 60.0
    clock.now_s += 60.0
    assert [limit.check(CHAT) for _ in range(4)] == [Verdict.ALLOW] * 2 + [Verdict.REFUSE, Verdict.DROP], (
        "a new run of refusals is said once again"
    )


def test_stale_chats_are_forgotten():
    clock = FakeClock()
    limit = ChatRateLimit(1, 60.0, clock=clock, max_chats=3)
    for chat in range(3):
        limit.check(chat)
    clock.now_s += 61.0
    limit.check(99)
    assert set(limit._events) == {99}


def test_jobs_over_the_per_minute_limit_get_one_polite_reply_then_nothing():
    clock = FakeClock()
    config = BotConfig(token=TOKEN, allowed_chats=frozenset({CHAT}), jobs_per_minute=2)
    runner = JobRunner(bot=None, flux=None, config=config, clock=clock)
    started, said = [], []

    async def run(chat_id, submission):
        started.append(chat_id)

    async def say(chat_id, text, keyboard=None):
        said.append(text)

    runner._run, runner.say = run, say

    async def scenario():
        for _ in range(6):
            await runner.run(CHAT, Submission(prompt="a fox", model="m"))

    asyncio.run(scenario())
    assert started == [CHAT, CHAT]
    assert len(said) == 1 and "2 jobs in the last minute" in said[0] and "try again in 60 s" in said[0], said
    clock.now_s += 60.0
    asyncio.run(scenario())
    assert len(started) == 4 and len(said) == 2


def test_a_flood_of_messages_gets_one_answer_and_is_then_dropped_quietly(monkeypatch):
    from aiogram.types import Chat, Message

    from flux_client.telegram_bot import FloodGate

    answers, handled = [], []

    async def answer(self, text, **kwargs):
        answers.append(text)

    async def handler(event, data):
        handled.append(event.text)

    monkeypatch.setattr(Message, "answer", answer)
    config = BotConfig(token=TOKEN, allow_anyone=True, updates_per_minute=3)
    gate = FloodGate(config, clock=FakeClock())
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

    async def scenario():
        for index in range(10):
            message = Message(message_id=index, date=when, chat=Chat(id=CHAT, type="private"), text=f"m{index}")
            await gate(handler, message, {})

    asyncio.run(scenario())
    assert handled == ["m0", "m1", "m2"]
    assert len(answers) == 1 and "more than 3 messages a minute" in answers[0], answers
