"""Schemathesis fuzzes the API from its own /openapi.json: no input may cause a 5xx, and every answer
(400, 401, 404, 413, 422, 429, 503, the OpenAI routes' own error shape) is one the schema documents.

Negative mode sends inputs that break the schema to every route; positive mode sends valid ones to
the routes that do no generation work (GET), so the fuzz run does not queue images. The submit and
OpenAI routes are checked for conformance with invalid inputs only, for the same reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import API_KEY

pytestmark = pytest.mark.serve
SCHEMATHESIS = str(Path(sys.executable).parent / "st")
CONFORMANCE = "not_a_server_error,response_schema_conformance,status_code_conformance"
SUBMIT_ROUTES = ["--include-path", "/v1/{model}", "--include-path", "/v1/images/generations"]


@pytest.mark.parametrize(
    ("checks", "mode", "max_examples"),
    [
        ("not_a_server_error", ["--mode", "negative"], 25),
        (CONFORMANCE, ["--mode", "positive", "--include-method", "GET"], 25),
        (CONFORMANCE, ["--mode", "negative", *SUBMIT_ROUTES, "--include-path", "/v1/images/edits"], 10),
    ],
    ids=["no-server-errors", "get-conformance", "submit-conformance"],
)
def test_fuzzing(base_url, checks, mode, max_examples):
    command = [
        SCHEMATHESIS, "run", f"{base_url}/openapi.json",
        "--checks", checks,
        "--header", f"x-key: {API_KEY}",
        "--max-examples", str(max_examples), "--seed", "7", "--request-timeout", "30",
        *mode,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    summary = run.stdout[-4000:]
    assert run.returncode == 0, summary
    assert re.search(r"\d+ generated", summary), summary
    print(summary)
