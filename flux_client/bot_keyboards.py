"""Inline buttons and their callback data ('verb:argument|signature', under Telegram's 64 bytes), signed for
the chat they are sent to (flux_client.bot_signing): a button only works in the chat it was made for."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from flux_client.bot_options import ChatSettings
from flux_client.bot_signing import CALLBACK_DATA_MAX_BYTES, SIGNED_OVERHEAD_BYTES, CallbackSigner

AGAIN, MORE, CANCEL, SET = "again", "more", "cancel", "set"
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16")
IMAGE_COUNTS = (1, 2, 4)


class Buttons:
    """Makes the buttons of one chat, their data signed for it."""

    def __init__(self, signer: CallbackSigner, chat_id: int):
        self.signer, self.chat_id = signer, chat_id

    def __call__(self, text: str, verb: str, argument: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(text=text, callback_data=self.signer.sign(self.chat_id, f"{verb}:{argument}"))


def fits(verb: str, argument: str) -> bool:
    """Whether 'verb:argument' still fits Telegram's 64 bytes once signed."""
    return len(f"{verb}:{argument}".encode()) + SIGNED_OVERHEAD_BYTES <= CALLBACK_DATA_MAX_BYTES


def parse_callback(data: str | None, signer: CallbackSigner, chat_id: int) -> tuple[str, str]:
    """'again:JOBID|signature' from chat `chat_id` -> ('again', 'JOBID'); anything unknown, unsigned, forged or
    signed for another chat -> ('', '')."""
    verb, _, argument = (signer.verify(chat_id, data) or "").partition(":")
    return (verb, argument) if verb in (AGAIN, MORE, CANCEL, SET) and argument else ("", "")


def running_keyboard(buttons: Buttons, job_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[buttons("Cancel", CANCEL, job_id)]])


def album_keyboard(buttons: Buttons, job_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[buttons("Again", AGAIN, job_id), buttons("Same seed, 4 more", MORE, job_id)]]
    )


def short_model(model: str) -> str:
    """'flux-2-klein-9b' -> '9b' for a button label."""
    return model.rsplit("-", 1)[-1]


def settings_keyboard(settings: ChatSettings, models: list[str], buttons: Buttons) -> InlineKeyboardMarkup:
    """One row per setting; the current choice is ticked. `models` may be empty when the service is down; a
    model whose id is too long for a button's data is left out (it stays reachable with --model)."""

    def label(text: str, chosen: bool) -> str:
        return f"\u2713 {text}" if chosen else text

    rows = []
    models = [m for m in models if fits(SET, f"model={m}")]
    if models:
        rows.append([buttons(label(short_model(m), m == settings.model), SET, f"model={m}") for m in models])
    rows.append([buttons(label(ar, ar == (settings.aspect_ratio or "1:1")), SET, f"ar={ar}") for ar in ASPECT_RATIOS])
    rows.append([buttons(label(f"n={n}", n == settings.num_images), SET, f"n={n}") for n in IMAGE_COUNTS])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def apply_setting(settings: ChatSettings, argument: str) -> str:
    """Apply 'model=…', 'ar=…' or 'n=…' from a settings button; return what changed, for the answer."""
    name, _, value = argument.partition("=")
    if name == "model":
        settings.model = value
        return f"model: {value}"
    if name == "ar" and value in ASPECT_RATIOS:
        settings.aspect_ratio = None if value == "1:1" else value
        return f"aspect ratio: {value}"
    if name == "n" and value.isdigit() and int(value) in IMAGE_COUNTS:
        settings.num_images = int(value)
        return f"images per prompt: {value}"
    raise ValueError(f"unknown setting {argument!r}")


def describe_settings(settings: ChatSettings) -> str:
    return (
        "Settings for this chat (kept in the bot's memory until it restarts):\n"
        f"model: {settings.model}\naspect ratio: {settings.aspect_ratio or '1:1 (the model default)'}\n"
        f"images per prompt: {settings.num_images}"
    )
