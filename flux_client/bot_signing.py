"""Callback data bound to its chat: an HMAC over chat id + data, appended to the data.

Telegram lets any client send any callback data for a message's button, so a button's data alone proves
nothing. Signed for the chat whose message carries the button, a forged or copied button (another chat's job
id, a hand-made 'cancel:...') does not verify and is ignored. The key comes from the bot token: nothing to
configure, and a new token retires the old buttons. No aiogram here."""

from __future__ import annotations

import base64
import hashlib
import hmac

CALLBACK_DATA_MAX_BYTES = 64  # Telegram's limit on an inline button's callback_data
SEPARATOR = "|"
MAC_BYTES = 12  # 96 bits of HMAC-SHA256, 16 characters in base64url: room for 'again:' + a 32-char job id
SIGNED_OVERHEAD_BYTES = len(SEPARATOR) + 4 * MAC_BYTES // 3


class CallbackSigner:
    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("a callback signing key needs at least 16 bytes")
        self.key = key

    @classmethod
    def for_token(cls, token: str) -> CallbackSigner:
        """The key for a bot: derived from its token (never the token itself on the wire)."""
        return cls(hashlib.sha256(b"flux-serve telegram callback data\0" + token.encode()).digest())

    def _mac(self, chat_id: int, data: str) -> str:
        digest = hmac.new(self.key, f"{chat_id}\0{data}".encode(), hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode()

    def sign(self, chat_id: int, data: str) -> str:
        """'again:JOBID' -> 'again:JOBID|<mac>', valid in chat `chat_id` only; ValueError over 64 bytes."""
        signed = f"{data}{SEPARATOR}{self._mac(chat_id, data)}"
        if len(signed.encode()) > CALLBACK_DATA_MAX_BYTES:
            raise ValueError(
                f"callback data {data!r} is {len(data.encode())} bytes; signed it must fit Telegram's "
                f"{CALLBACK_DATA_MAX_BYTES}, so keep it to {CALLBACK_DATA_MAX_BYTES - SIGNED_OVERHEAD_BYTES}"
            )
        return signed

    def verify(self, chat_id: int, signed: str | None) -> str | None:
        """The data when its signature is this chat's; None for unsigned, forged or another chat's data."""
        data, separator, mac = (signed or "").rpartition(SEPARATOR)
        if not separator or not hmac.compare_digest(mac.encode(), self._mac(chat_id, data).encode()):
            return None
        return data
