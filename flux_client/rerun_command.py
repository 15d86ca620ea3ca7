"""`python -m flux_client rerun JOB_ID`: make a Ready job again and say whether its images came out the same."""

from __future__ import annotations

import argparse
import sys

from flux_client import config
from flux_client.errors import FluxError

SAME, DIFFERENT, FAILED = 0, 1, 2


def add_rerun_arguments(parser: argparse.ArgumentParser, add_connection_arguments) -> None:
    parser.add_argument("job_id", help="a Ready job of this key")
    add_connection_arguments(parser)


def verdict(job: dict) -> str:
    """One line on a finished rerun: identical, or how far its pixels are from the original's."""
    rerun = job.get("rerun") or {}
    if rerun.get("identical"):
        return f"identical: job {job['id']} made the same bytes as job {job['rerun_of']}"
    if rerun.get("identical") is None:
        return f"not compared: {rerun.get('note') or 'the server gave no verdict'}"
    difference = rerun.get("max_pixel_difference")
    shown = "unknown" if difference is None else f"{difference} of 255"
    note = f" ({rerun['note']})" if rerun.get("note") else ""
    return f"different: job {job['id']} differs from job {job['rerun_of']}, largest pixel difference {shown}{note}"


def run_rerun(options: argparse.Namespace, progress_bar) -> int:
    """Rerun, follow, print the verdict. Exit code 0 identical, 1 different (or not compared), 2 failed."""
    from flux_client.client import FluxClient

    try:
        with FluxClient(config.api_url(options.url), config.api_key(options.key)) as flux:
            job_id = flux.rerun(options.job_id)["id"]
            bar = progress_bar(job_id)
            try:
                flux.wait(job_id, on_progress=bar)
            finally:
                bar.close()
            job = flux.job(job_id)
    except (FluxError, TimeoutError) as error:
        print(f"flux-serve rerun: {error}", file=sys.stderr)
        return FAILED
    print(verdict(job))
    return SAME if (job.get("rerun") or {}).get("identical") else DIFFERENT
