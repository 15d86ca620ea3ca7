"""What the web studio adds to a job's own time, and what idle event streams cost the service.

Against a running service (`flux-serve run`):

    .venv/bin/python -m bench.page_latency --url http://127.0.0.1:8000 --key KEY

1. Page latency, in headless Chromium (Debian's `chromium`): from pressing Generate to the
   first event, the first progress event and all images shown, beside the same job's own
   `timings_s` (queue, encode, denoise, decode, total as the service measured them).
2. Idle streams: CPU seconds per second of the service's Ray processes (the Ingress replica
   and the HTTP proxy, which relays the streams) with N event streams open on a job that
   waits in the queue, against the same processes with none open.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from urllib.parse import urlsplit

import httpx
import psutil

SERVICE_PROCESS_TITLES = ("ServeReplica:flux:Ingress", "ProxyActor")
BLOCKER = {"width": 1024, "height": 1024, "steps": 50, "prompt": "a blue square on a white background"}


def page_latency(url: str, key: str, model: str, runs: int, job: dict, screenshot: str | None) -> list[dict]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: `apt-get install chromium` (bash setup.sh does it as root)")
    rows = []
    with sync_playwright() as playwright, httpx.Client(base_url=url, headers={"x-key": key}) as http:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.get_by_label("API key").fill(key)
        page.get_by_label("API key").press("Tab")
        page.wait_for_function("document.querySelectorAll('#model option').length > 0")
        page.get_by_label("Model").select_option(model)
        page.get_by_label("Prompt").fill(job["prompt"])
        page.get_by_label("Number of images").fill(str(job["num_images"]))
        page.get_by_label("Steps").fill(str(job["steps"]))
        for run in range(runs):
            page.get_by_label("Seed").fill(str(run))
            page.get_by_role("button", name="Generate").click()
            card = page.locator("#results article.job").nth(0)
            page.wait_for_function(
                f"document.querySelectorAll('#results article.job').length > {run} && "
                "document.querySelector('#results article.job').dataset.imagesShown",
                timeout=120_000,
            )
            times = card.evaluate("el => Object.fromEntries(Object.entries(el.dataset))")
            timings = http.get(f"/v1/jobs/{times['jobId']}").json()["timings_s"]
            pressed = float(times["pressedAt"])
            rows.append(
                {
                    "submit_s": (float(times["submittedAt"]) - pressed) / 1000,
                    "first_event_s": (float(times.get("firstEventAt", "nan")) - pressed) / 1000,
                    "first_progress_s": (float(times.get("progressSeen", "nan")) - pressed) / 1000,
                    "done_event_s": (float(times["finishedAt"]) - pressed) / 1000,
                    "images_shown_s": (float(times["imagesShown"]) - pressed) / 1000,
                    "job": timings,
                }
            )
            print(f"run {run}: {rows[-1]}", flush=True)
        if screenshot:
            page.screenshot(path=screenshot)
        browser.close()
    return rows


def service_processes(url: str) -> list[psutil.Process]:
    """The HTTP proxy listening on the service's port and the Ingress replicas beside it (one raylet's
    children), so another Ray instance on the same machine is not counted."""
    port = urlsplit(url).port
    listeners = [
        c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == psutil.CONN_LISTEN
    ]
    if not listeners:
        raise SystemExit(f"nothing listens on port {port} here: run this on the service's machine")
    raylet = psutil.Process(listeners[0]).parent()
    found = [
        child
        for child in raylet.children()
        if any(title in " ".join(child.cmdline()) for title in SERVICE_PROCESS_TITLES)
    ]
    if not found:
        raise SystemExit(f"no Ray process titled {SERVICE_PROCESS_TITLES} under the raylet {raylet.pid}")
    return found


def cpu_per_s(processes: list[psutil.Process], seconds: float) -> float:
    """CPU seconds per wall second of the processes together (1.0 = one core busy)."""
    before = sum(sum(process.cpu_times()[:2]) for process in processes)
    time.sleep(seconds)
    return (sum(sum(process.cpu_times()[:2]) for process in processes) - before) / seconds


async def hold_streams(url: str, key: str, job_id: str, count: int, opened: asyncio.Event, stop: asyncio.Event) -> int:
    """Open `count` event streams on one job and read them until `stop`; returns the events received."""
    received = 0
    ready = 0
    limits = httpx.Limits(max_connections=count + 1)

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal received, ready
        async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            ready += 1
            if ready == count:
                opened.set()
            async for line in response.aiter_lines():
                received += line.startswith("event:")

    async with httpx.AsyncClient(base_url=url, headers={"x-key": key}, timeout=None, limits=limits) as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(count)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return received


def idle_streams_cpu(url: str, key: str, model: str, streams: int, seconds: float) -> dict:
    """CPU of the service while a long job runs and another waits, with and without streams on the waiting one."""
    processes = service_processes(url)
    with httpx.Client(base_url=url, headers={"x-key": key}, timeout=60) as http:
        blocker = http.post(f"/v1/{model}", json={**BLOCKER, "seed": 1}).json()["id"]
        while http.get(f"/v1/jobs/{blocker}").json()["stage"] != "denoising":
            time.sleep(0.2)
        waiting = http.post(f"/v1/{model}", json={**BLOCKER, "seed": 2, "width": 768}).json()["id"]
        try:
            baseline = cpu_per_s(processes, seconds)

            async def measure() -> tuple[float, int]:
                opened, stop = asyncio.Event(), asyncio.Event()
                holder = asyncio.create_task(hold_streams(url, key, waiting, streams, opened, stop))
                await asyncio.wait_for(opened.wait(), 60)
                busy = await asyncio.to_thread(cpu_per_s, processes, seconds)
                stop.set()
                return busy, await holder

            with_streams, events = asyncio.run(measure())
            waiting_stage = http.get(f"/v1/jobs/{waiting}").json()["stage"]
        finally:
            for job_id in (blocker, waiting):
                http.post(f"/v1/jobs/{job_id}/cancel")
    return {
        "streams": streams,
        "seconds": seconds,
        "cpu_per_s_without": round(baseline, 3),
        "cpu_per_s_with": round(with_streams, 3),
        "added_cpu_per_stream_percent": round(100 * (with_streams - baseline) / streams, 3),
        "events_received": events,
        "waiting_job_stage_at_the_end": waiting_stage,
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", default="flux-2-klein-4b")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt", default="a red circle on a blue background")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--screenshot", default=None, help="write the page after the last run here (PNG)")
    options = parser.parse_args()

    job = {"prompt": options.prompt, "steps": options.steps, "num_images": options.num_images}
    rows = page_latency(options.url, options.key, options.model, options.runs, job, options.screenshot)
    print("page latency, medians over", len(rows), "runs (seconds):")
    print("  Generate -> submit answered:", median([row["submit_s"] for row in rows]))
    print("  Generate -> first event:    ", median([row["first_event_s"] for row in rows]))
    print("  Generate -> first progress: ", median([row["first_progress_s"] for row in rows]))
    print("  Generate -> done event:     ", median([row["done_event_s"] for row in rows]))
    print("  Generate -> images shown:   ", median([row["images_shown_s"] for row in rows]))
    print("  job's own timings_s.total:  ", median([row["job"]["total"] for row in rows]))
    print("  page adds (shown - total):  ", median([row["images_shown_s"] - row["job"]["total"] for row in rows]))
    if options.streams:
        print(
            "idle streams:", idle_streams_cpu(options.url, options.key, options.model, options.streams, options.idle_s)
        )


if __name__ == "__main__":
    main()
