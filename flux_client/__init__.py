"""A small client of flux-serve's public HTTP API: Python (sync and async), a CLI and a Telegram bot.

It imports only httpx, tqdm and the standard library (the bot: aiogram, from the `flux-serve[bot]` extra), so it
works against any deployment. The clients (and so httpx) load on first use, so `python -m flux_client --help`
answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flux_client.errors import FluxAPIError, FluxConnectionError, FluxError, JobFailed
from flux_client.progress import JobUpdate

if TYPE_CHECKING:
    from flux_client.client import AsyncFluxClient, FluxClient

__all__ = [
    "AsyncFluxClient",
    "FluxAPIError",
    "FluxClient",
    "FluxConnectionError",
    "FluxError",
    "JobFailed",
    "JobUpdate",
]


def __getattr__(name: str):
    if name in ("AsyncFluxClient", "FluxClient"):
        from flux_client import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
