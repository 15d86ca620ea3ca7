"""Open event streams counted in this ingress replica: per API key and in all, so streams (each holds
one of the replica's request slots for as long as it lives) cannot crowd out submits and polls."""

from __future__ import annotations

from collections import Counter
from http import HTTPStatus

KEY_RETRY_AFTER_S = 10  # a stream ends at the latest after limits.stream_max_life_s; most end sooner
REPLICA_RETRY_AFTER_S = 5  # another replica may have room at once


class StreamRefused(Exception):
    """Over a stream cap: 429 (this key's) or 503 (this replica's), with Retry-After; the message says what to do."""

    def __init__(self, status_code: int, message: str, retry_after_s: int):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class StreamSlots:
    def __init__(self, per_key: int, per_replica: int):
        self.per_key = per_key
        self.per_replica = per_replica
        self.open_by_key: Counter[str] = Counter()

    @property
    def open_total(self) -> int:
        return self.open_by_key.total()

    def take(self, key_id: str) -> None:
        """One more stream of `key_id`, or StreamRefused (the key's cap first, then the replica's).
        Call from the event loop only; give it back with `give_back` when the stream ends."""
        if self.open_by_key[key_id] >= self.per_key:
            raise StreamRefused(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"This key has {self.open_by_key[key_id]} event streams open here, the most "
                f"limits.max_streams_per_key allows: close one you no longer read, or poll GET /v1/jobs/{{id}}; "
                f"retry after {KEY_RETRY_AFTER_S} s.",
                KEY_RETRY_AFTER_S,
            )
        if self.open_total >= self.per_replica:
            raise StreamRefused(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"This replica serves {self.open_total} event streams, the most limits.max_streams_per_replica "
                f"allows: retry after {REPLICA_RETRY_AFTER_S} s (another replica may take it), or poll "
                "GET /v1/jobs/{id}.",
                REPLICA_RETRY_AFTER_S,
            )
        self.open_by_key[key_id] += 1

    def give_back(self, key_id: str) -> None:
        self.open_by_key[key_id] -= 1
        if self.open_by_key[key_id] <= 0:
            del self.open_by_key[key_id]
