"""Serving apart from training: what a replica imports, checked in a fresh interpreter.

The arrows themselves are `.importlinter`'s (`lint-imports`); these tests check what they
cannot see, the modules actually loaded, third-party ones included.
"""

from __future__ import annotations

import json
import subprocess
import sys

SERVING_MODULES = (
    "serve_apps.api.app",
    "serve_apps.api.ingress",
    "serve_apps.builder",
    "serve_apps.workers",
    "deployments.denoiser",
    "deployments.encoder",
    "lora.registry",
)
# Not peft or tqdm: diffusers and torch import those themselves.
TRAINING_ONLY = ("training", "pyarrow", "matplotlib", "skimage")


def loaded_after_importing(modules: tuple[str, ...]) -> set[str]:
    """sys.modules of a new interpreter after importing `modules`, so this process's imports do not count."""
    imports = "; ".join(f"import {name}" for name in modules)
    code = f"{imports}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_serving_imports_no_trainer_and_no_training_libraries():
    loaded = loaded_after_importing(SERVING_MODULES)
    assert "training.lora_trainer" not in loaded
    assert "training.shapes_model" not in loaded
    assert sorted(name for name in loaded if name.split(".")[0] in TRAINING_ONLY) == []


def test_protocol_imports_no_torch():
    loaded = loaded_after_importing(("serve_apps.api.protocol",))
    assert "torch" not in loaded
