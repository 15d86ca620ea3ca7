"""The client's exceptions: each carries what the API (or the network) said, so callers can show it as is."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class FluxError(Exception):
    """Base of every error the client raises."""


class FluxAPIError(FluxError):
    """The API answered with an error status; `message` is the API's own explanation."""

    def __init__(self, status_code: int, message: str, retry_after_s: float | None = None):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.retry_after_s = retry_after_s


class FluxConnectionError(FluxError):
    """The API could not be reached at all (down, wrong URL, network)."""

    def __init__(self, base_url: str, cause: Exception):
        reason = str(cause) or type(cause).__name__
        super().__init__(
            f"cannot reach the flux-serve API at {base_url} ({reason}); is the service running? "
            "Check the URL (--url or FLUX_API_URL)."
        )
        self.base_url = base_url


class JobFailed(FluxError):
    """A job ended without images (Error, Cancelled, Request/Content Moderated); `job` is its final record."""

    def __init__(self, job: dict):
        super().__init__(f"job {job['id']} ended {job['status']}: {job.get('error') or 'no reason given'}")
        self.job = job

    @property
    def status(self) -> str:
        return self.job["status"]


def error_message(response: httpx.Response) -> str:
    """The API's message from any of its error shapes.

    FastAPI: {"detail": "text"} or {"detail": [{"loc": [...], "msg": ...}, ...]} (pydantic);
    the OpenAI routes: {"error": {"message": ...}}. Anything else: the body text or the reason phrase.
    """
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            return "; ".join(_field_problem(problem) for problem in detail)
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return response.text.strip() or response.reason_phrase


def _field_problem(problem) -> str:
    """One pydantic error as 'field.path: message' (the leading 'body' of the location dropped)."""
    if not isinstance(problem, dict):
        return str(problem)
    location = [str(part) for part in problem.get("loc", []) if part not in ("body", "query", "path")]
    message = str(problem.get("msg", problem))
    return f"{'.'.join(location)}: {message}" if location else message


def raise_for_api_error(response: httpx.Response) -> None:
    """Raise FluxAPIError with the API's message when the response is not a success."""
    if response.is_success:
        return
    retry_after = response.headers.get("retry-after")
    retry_after_s = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    raise FluxAPIError(response.status_code, error_message(response), retry_after_s)
