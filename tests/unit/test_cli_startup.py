"""The CLIs answer --help and argument errors at once: importing them loads no heavy library (each import is made
inside the command that needs it), and the server's CLI hands `generate` and `telegram` to the client's without
importing it. Checked in a fresh interpreter, by what is in sys.modules, not by a clock."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY_FOR = {
    "serve_apps.cli": ["torch", "ray", "diffusers", "transformers", "sqlalchemy", "pydantic", "flux_client"],
    "flux_client.cli": ["aiogram", "torch", "ray", "httpx", "tqdm", "serve_apps"],
    "flux_client": ["aiogram", "torch", "ray", "httpx"],
}


def loaded_by(module: str) -> set[str]:
    """The top-level names in sys.modules after `import module` in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return {name.split(".")[0] for name in json.loads(done.stdout)}


@pytest.mark.parametrize("module", list(HEAVY_FOR))
def test_importing_a_cli_loads_no_heavy_library(module):
    heavy = sorted(set(HEAVY_FOR[module]) & loaded_by(module))
    assert not heavy, f"`import {module}` loads {heavy}: import them inside the command that needs them"


@pytest.mark.parametrize(("command", "option"), [("generate", "--aspect-ratio"), ("rerun", "a Ready job of this key")])
def test_flux_serve_hands_client_commands_over_to_the_client_cli(command, option):
    done = subprocess.run(
        [sys.executable, "-m", "serve_apps.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m flux_client {command}") and option in done.stdout


def test_flux_serve_still_refuses_unknown_arguments_of_its_own_commands():
    done = subprocess.run(
        [sys.executable, "-m", "serve_apps.cli", "run", "--bogus"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr
