"""A small client of flux-serve's public HTTP API: Python (sync and async), a CLI and a Telegram bot.

It imports only httpx and the standard library (aiogram for the bot), so it works against any deployment.
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
