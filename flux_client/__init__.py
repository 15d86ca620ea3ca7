"""A small client of flux-serve's public HTTP API: Python (sync and async), a CLI and a Telegram bot.

It imports only httpx, tqdm and the standard library (the bot: aiogram, from the `flux-serve[bot]` extra), so it
works against any deployment.
"""

from flux_client.client import AsyncFluxClient, FluxClient
from flux_client.errors import FluxAPIError, FluxConnectionError, FluxError, JobFailed
from flux_client.progress import JobUpdate

__all__ = [
    "AsyncFluxClient",
    "FluxAPIError",
    "FluxClient",
    "FluxConnectionError",
    "FluxError",
    "JobFailed",
    "JobUpdate",
]
