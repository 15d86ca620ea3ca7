"""Where the server keeps things is the operator's business: file paths, bucket names and storage URLs stay
out of what every key sees (LoRA and model listings, job errors). Admin keys and the server log see them whole.
"""

from __future__ import annotations

import re

from deployments.weights import is_emulated

URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://[^\s'\"<>()\[\]{},;]+", re.IGNORECASE)
PATH = re.compile(r"(?<![\w.~/-])(?:~|\.{1,2})?/[\w.@+%=~-]+(?:/[\w.@+%=~-]*)*")
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+\Z")
API_ROUTE_PREFIX = "/v1/"  # what error messages name as the fix: never a location
WEB_SCHEMES = ("http", "https")


def _hidden_url(match: re.Match) -> str:
    return "<url>" if match.group(1).lower() in WEB_SCHEMES else "<storage>"


def _hidden_path(match: re.Match) -> str:
    path = match.group(0)
    return path if path.startswith(API_ROUTE_PREFIX) else "<path>"


def redact_locations(text: str) -> str:
    """`text` with every URL ("s3://bucket/..." -> "<storage>", "http://..." -> "<url>") and file path
    ("/srv/...", "~/...", "./..." -> "<path>") replaced; the API's own routes (/v1/...) stay."""
    return PATH.sub(_hidden_path, URL.sub(_hidden_url, text))


def shown_error(job_id: str, reason: str | None) -> str | None:
    """A job's error as its key sees it: locations hidden, and where to find the whole message."""
    if reason is None:
        return None
    shown = redact_locations(reason)
    if shown == reason:
        return reason
    return f"{shown} (file and storage locations are hidden; the server log has the full error of job {job_id})"


def public_source(source: str) -> str | None:
    """A Hugging Face repo id is public and stays; a file path or storage URL is hidden (None)."""
    return source if HUB_REPO_ID.match(source) else None


def weights_kind(weights: str) -> str:
    """What backs a model without where: `emulated[:size]` and hub ids as they are, else the kind of place."""
    if is_emulated(weights) or public_source(weights):
        return weights
    return "remote checkpoint" if "://" in weights else "local checkpoint"
