"""Per-chat rate limits over a sliding window. A chat over its limit gets one polite refusal; what it sends
after that, until the limit lets it through again, is dropped quietly: a flood costs one reply, not one per
message. No aiogram here."""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable


class Verdict(enum.Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # the first refusal of a run: say so once
    DROP = "drop"  # refused again in the same run: say nothing


class ChatRateLimit:
    """At most `limit` events per `window_s` per chat. Stale chats are forgotten once more than
    `max_chats` are tracked, so memory follows the chats active in the last window."""

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_chats: int = 10_000,
    ):
        if limit < 1 or window_s <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and window_s > 0, not {limit} per {window_s} s")
        self.limit, self.window_s, self.clock, self.max_chats = limit, window_s, clock, max_chats
        self._events: dict[int, deque[float]] = {}
        self._refused: set[int] = set()  # chats already told, until an event of theirs is allowed again

    def check(self, chat_id: int) -> Verdict:
        """Count one event of the chat if the limit allows it."""
        now = self.clock()
        events = self._events.setdefault(chat_id, deque())
        while events and now - events[0] >= self.window_s:
            events.popleft()
        if len(events) < self.limit:
            events.append(now)
            self._refused.discard(chat_id)
            if len(self._events) > self.max_chats:
                self._forget_stale(now)
            return Verdict.ALLOW
        if chat_id in self._refused:
            return Verdict.DROP
        self._refused.add(chat_id)
        return Verdict.REFUSE

    def retry_after_s(self, chat_id: int) -> float:
        """Seconds until the chat's next event is allowed (0 when it is allowed now)."""
        events = self._events.get(chat_id)
        if not events or len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.window_s - self.clock())

    def _forget_stale(self, now: float) -> None:
        for chat_id in [c for c, events in self._events.items() if not events or now - events[-1] >= self.window_s]:
            del self._events[chat_id]
            self._refused.discard(chat_id)
