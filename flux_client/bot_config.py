"""The Telegram bot's settings, from the environment (see README, "Telegram bot")."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from flux_client import config
from flux_client.config import DEFAULT_URL

DEFAULT_WEBHOOK_LISTEN = "127.0.0.1:8081"
TOKEN_SHAPE = re.compile(r"^\d+:[\w-]+\Z")  # what @BotFather hands out: 123456:ABC-def...
WEBHOOK_SECRET_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,256}\Z")  # what setWebhook's secret_token accepts
ANYONE = "*"  # TELEGRAM_ALLOWED_CHATS=* : every chat may use the bot, said explicitly
MAKE_A_SECRET = "export TELEGRAM_WEBHOOK_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def _allowed_chats(text: str) -> frozenset[int]:
    chats = set()
    for part in text.split(","):
        if part.strip():
            try:
                chats.add(int(part.strip()))
            except ValueError:
                raise ConfigError(
                    f"TELEGRAM_ALLOWED_CHATS has {part.strip()!r}; give chat ids as integers, comma-separated "
                    f"(e.g. 12345,-100987654321), or {ANYONE} alone to allow anyone."
                ) from None
    if not chats:
        raise ConfigError(
            "TELEGRAM_ALLOWED_CHATS is not set: list the chat ids that may use the bot, comma-separated "
            "(e.g. TELEGRAM_ALLOWED_CHATS=12345,-100987654321; the bot tells a refused chat its id), "
            f"or set TELEGRAM_ALLOWED_CHATS={ANYONE} to let anyone draw on your GPU."
        )
    return frozenset(chats)


def _positive_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name} is {text!r}; it must be a whole number of at least 1.")
    return int(text)


def _listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"webhook listen address {text!r} must look like HOST:PORT, e.g. {DEFAULT_WEBHOOK_LISTEN}.")
    return host, int(port)


@dataclass(frozen=True)
class BotConfig:
    token: str
    flux_url: str = DEFAULT_URL
    flux_key: str | None = None
    telegram_api_url: str | None = None  # a Bot API server's base URL; None: Telegram's own
    allowed_chats: frozenset[int] = frozenset()
    allow_anyone: bool = False  # TELEGRAM_ALLOWED_CHATS=*; never the default
    max_jobs_per_chat: int = 2  # running at once
    jobs_per_minute: int = 10  # jobs a chat may start in a minute; the first refusal is said, the rest dropped
    updates_per_minute: int = 30  # messages and button presses a chat may send in a minute (floods: one reply)
    webhook_url: str | None = None  # set: webhook mode; None: long polling
    webhook_listen: tuple[str, int] = _listen_address(DEFAULT_WEBHOOK_LISTEN)
    webhook_secret: str | None = None
    status_edit_interval_s: float = 1.0  # Telegram limits edits; one per second per status message is safe
    service_retry_delays_s: tuple[float, ...] = (5.0, 15.0, 45.0)  # when the image service is down at submit
    poll_interval_s: float = 0.5
    job_timeout_s: float = 600.0
    album_wait_s: float = 1.0  # Telegram delivers an album's photos as separate messages: gather them this long
    training_poll_interval_s: float = 2.0  # how often a followed training's details are read
    training_status_interval_s: float = 5.0  # at most one edit of a training's status message this often
    training_timeout_s: float = 6 * 3600.0  # a training followed longer than this is left to /finetunes
    training_unreachable_s: float = 300.0  # the service out of reach this long: stop following (it trains on)

    def __post_init__(self) -> None:
        if not self.allowed_chats and not self.allow_anyone:
            raise ConfigError(
                "no chat may use the bot: give allowed_chats (TELEGRAM_ALLOWED_CHATS=12345,...) or, to let "
                f"anyone use it, allow_anyone=True (TELEGRAM_ALLOWED_CHATS={ANYONE})."
            )
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError(
                "TELEGRAM_WEBHOOK_SECRET is not set: webhook mode needs it, or anyone who finds the webhook URL "
                "can post forged updates as an allowed chat. Set it to a random string of letters, digits, _ "
                f"and -, e.g. {MAKE_A_SECRET}"
            )
        if self.webhook_secret is not None and not WEBHOOK_SECRET_SHAPE.match(self.webhook_secret):
            raise ConfigError(
                "TELEGRAM_WEBHOOK_SECRET must be 1-256 letters, digits, _ or - (what Telegram accepts), "
                f"e.g. {MAKE_A_SECRET}"
            )

    def allows(self, chat_id: int) -> bool:
        return self.allow_anyone or chat_id in self.allowed_chats

    @classmethod
    def from_env(cls, webhook_url: str | None = None, webhook_listen: str | None = None) -> BotConfig:
        """Flags win over env; TELEGRAM_BOT_TOKEN is required."""
        token = os.environ.get("TELEGRAM_BOT_TOKEN", "").strip()
        if not token:
            raise ConfigError("TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and export its token.")
        if not TOKEN_SHAPE.match(token):
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN does not look like a bot token (123456:ABC-...); copy it from @BotFather."
            )
        listen = webhook_listen or os.environ.get("TELEGRAM_WEBHOOK_LISTEN") or DEFAULT_WEBHOOK_LISTEN
        chats = os.environ.get("TELEGRAM_ALLOWED_CHATS", "").strip()
        return cls(
            token=token,
            flux_url=config.api_url(),
            flux_key=config.api_key(),
            telegram_api_url=os.environ.get("TELEGRAM_API_URL") or None,
            allowed_chats=frozenset() if chats == ANYONE else _allowed_chats(chats),
            allow_anyone=chats == ANYONE,
            max_jobs_per_chat=_positive_int("TELEGRAM_MAX_JOBS_PER_CHAT", cls.max_jobs_per_chat),
            jobs_per_minute=_positive_int("TELEGRAM_JOBS_PER_MINUTE", cls.jobs_per_minute),
            updates_per_minute=_positive_int("TELEGRAM_UPDATES_PER_MINUTE", cls.updates_per_minute),
            webhook_url=webhook_url or os.environ.get("TELEGRAM_WEBHOOK_URL") or None,
            webhook_listen=_listen_address(listen),
            webhook_secret=os.environ.get("TELEGRAM_WEBHOOK_SECRET", "").strip() or None,
        )
