"""A Server-Sent Events reader (the text/event-stream format), fed line by line, so sync and async share it."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerEvent:
    name: str
    data: object  # the decoded JSON, or the raw text when it is not JSON
    id: str | None = None


class EventParser:
    """Collects `event:`, `data:` and `id:` lines; a blank line ends one event (per the WHATWG spec)."""

    def __init__(self) -> None:
        self._name = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line (without its newline); return the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: servers send them as keep-alives
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None

    def _dispatch(self) -> ServerEvent | None:
        if not self._data:
            self._name = ""
            return None
        text = "\n".join(self._data)
        try:
            data = json.loads(text)
        except ValueError:
            data = text
        event = ServerEvent(self._name or "message", data, self._id)
        self._name, self._data = "", []
        return event
