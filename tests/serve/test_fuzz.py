"""Schemathesis fuzzes the API from its own /openapi.json: no input may cause a 5xx.

Negative mode sends inputs that break the schema to every route; positive mode sends valid
ones to the routes that do no generation work (GET), so the fuzz run does not queue images.
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


@pytest.mark.parametrize("mode", [["--mode", "negative"], ["--mode", "positive", "--exclude-method", "POST"]])
def test_fuzzing_finds_no_server_errors(base_url, mode):
    command = [
        SCHEMATHESIS, "run", f"{base_url}/openapi.json",
        "--checks", "not_a_server_error",
        "--header", f"x-key: {API_KEY}",
        "--max-examples", "25", "--seed", "7", "--request-timeout", "30",
        *mode,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    summary = run.stdout[-4000:]
    assert run.returncode == 0, summary
    assert re.search(r"\d+ generated", summary), summary
    print(summary)
