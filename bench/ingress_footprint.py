"""What the ingress replica carries: its memory after loading its modules, and the bytes of one job that cross it.

    python -m bench.ingress_footprint [--before PATH_TO_AN_OLDER_CHECKOUT]

RSS: a fresh interpreter imports what an Ingress replica imports (serve_apps.api.ingress, which builds the
FastAPI app) and reports its resident memory and whether torch/diffusers were loaded; with --before the
same is done in an older checkout (e.g. `git worktree add /tmp/ingress-before 432dc0d`), side by side.

Bytes per job: the pickled size of what passes through the ingress for one text-to-image job, with the
embeddings routed through it (the encoder's reply in, the DenoiseJob with embeddings out: how jobs ran
before 2026-12) and with DeploymentResponse composition (a DenoiseJob without embeddings out), at the
real klein sizes (512 tokens of 7680 / 12288 bf16 features) and the offline model's, with and without CFG.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
from pathlib import Path

PROBE = """
import importlib, json, os, sys, psutil
flat = os.path.exists("serve_apps/ingress.py")  # a checkout from before serve_apps was grouped by role
importlib.import_module("serve_apps.ingress" if flat else "serve_apps.api.ingress")
print(json.dumps({"rss_mb": psutil.Process().memory_info().rss / 2**20,
                  "torch": "torch" in sys.modules, "diffusers": "diffusers" in sys.modules,
                  "modules": len(sys.modules)}))
"""
MEGABYTE = 2**20


def ingress_rss(checkout: Path) -> dict:
    """In a fresh interpreter whose first import path is `checkout`, so its packages are the ones loaded."""
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bytes_per_job(tokens: int, width: int, cfg: bool) -> dict:
    import torch

    from deployments.contracts import DenoiseJob, GenerationParams
    from deployments.embedding import WIRE_DTYPE, PromptEmbedding

    params = GenerationParams(
        prompt="a red circle", width=1024, height=1024, steps=4, guidance=4.0 if cfg else None, seed=1
    )
    embedding = PromptEmbedding("family", torch.zeros(tokens, width, dtype=WIRE_DTYPE))
    embeddings = [embedding, embedding] if cfg else [embedding]
    size = lambda obj: len(pickle.dumps(obj, protocol=5))  # noqa: E731
    through_ingress = sum(size(e) for e in embeddings) + size(DenoiseJob(params, *embeddings, job_id="j" * 32))
    composed = size(DenoiseJob(params, None, None, job_id="j" * 32))
    return {"through_ingress_bytes": through_ingress, "composed_bytes": composed}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="an older checkout to compare the ingress RSS with")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parents[1]
    report: dict = {"ingress": {"now": ingress_rss(here)}}
    if args.before:
        report["ingress"]["before"] = ingress_rss(args.before)
    sizes = {"4b (real)": (512, 7680), "9b (real)": (512, 12288), "offline model": (32, 192)}
    report["bytes_per_job"] = {
        f"{name}{' + CFG' if cfg else ''}": bytes_per_job(tokens, width, cfg)
        for name, (tokens, width) in sizes.items()
        for cfg in (False, True)
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
