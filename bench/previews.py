"""What step previews cost the denoising loop, measured on the model workers in-process.

    python -m bench.previews --weights emulated --size 512 --steps 8 --repeats 5

The same jobs (4 single-image requests in one pass) run with previews on and off, alternating, after a
warm-up; the table gives seconds per denoising step of each (median and best of the repeats) and their
ratio, how many previews each job got and their size, and the cost of drawing one preview on its own.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.harness import bench_arguments
from bench.runners import load_workers
from deployments import denoiser as denoiser_module
from deployments.contracts import DenoiseJob, GenerationParams
from deployments.previews import PassPreviews, PreviewBudget, pass_previews
from deployments.progress import Progress

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
REQUESTS = 4


class Seen:
    """A step observer that keeps the previews of one run and never cancels."""

    def __init__(self):
        self.previews: dict[tuple[str, int], bytes] = {}

    def on_step(self, progress: Progress) -> None:
        if progress.preview is not None:
            self.previews[(progress.job_id, progress.preview_step)] = progress.preview

    def cancel_requested(self, _job_id: str) -> bool:
        return False


class Drawn:
    """The passes' previews as the denoiser makes them, so their own time is read from their budget."""

    def __init__(self):
        self.passes: list[PassPreviews] = []

    def __call__(self, *arguments) -> PassPreviews | None:
        made = pass_previews(*arguments)
        if made is not None:
            self.passes.append(made)
        return made


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[bench_arguments(repeats=5)]
    )
    parser.set_defaults(weights="emulated")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps of each job")
    args = parser.parse_args()

    encoder, denoiser = load_workers(args.model, args.weights, args.device)
    embeddings = encoder.encode([*PROMPTS, ""])

    def jobs(preview: bool) -> list[DenoiseJob]:
        made = []
        for index in range(REQUESTS):
            params = GenerationParams.with_defaults(
                denoiser.defaults,
                PROMPTS[index % 2],
                width=args.size,
                height=args.size,
                steps=args.steps,
                seed=index,
                preview=preview,
            )
            negative = embeddings[-1] if params.uses_cfg else None
            made.append(DenoiseJob(params, embeddings[index % 2], negative, job_id=f"job-{index}"))
        return made

    def step_s(preview: bool, seen: Seen) -> float:
        [result, *_] = denoiser.generate(jobs(preview), seen)
        return result.timings_s["denoise"] / args.steps

    step_s(True, Seen())  # warm-up: first-call costs are not a warm replica's
    off_s, on_s, previews, drawn = [], [], [], Drawn()
    denoiser_module.pass_previews = drawn
    for _ in range(args.repeats):
        off_s.append(step_s(False, Seen()))
        seen = Seen()
        on_s.append(step_s(True, seen))
        previews += seen.previews.values()
    per_job = len(previews) / (REQUESTS * args.repeats)
    share = sum(made.budget.spent_s for made in drawn.passes) / (sum(on_s) * args.steps)
    one_preview_ms = draw_one_ms(denoiser, jobs(True))

    off, on = statistics.median(off_s), statistics.median(on_s)
    print(
        f"model {args.model}, weights {args.weights}, {args.size}x{args.size}, {args.steps} steps, "
        f"{REQUESTS} requests in one pass, device {denoiser.device}, {args.repeats} alternating repeats"
    )
    print("| previews | s/step (median) | s/step (best) | ratio to off (median) |")
    print("|---|---|---|---|")
    print(f"| off | {off:.4f} | {min(off_s):.4f} | 1.000 |")
    print(f"| on | {on:.4f} | {min(on_s):.4f} | {on / off:.3f} |")
    print(f"time inside the previews, measured in the loop: {share:.2%} of the denoising time with previews on")
    print(
        f"previews per job: {per_job:.1f} of {args.steps} steps; JPEG {statistics.mean(map(len, previews)):.0f} "
        f"bytes on average; one preview of {REQUESTS} requests drawn alone: {one_preview_ms:.2f} ms "
        f"({one_preview_ms / 1000 / off:.1%} of a step)"
    )


def draw_one_ms(denoiser, jobs: list[DenoiseJob], repeats: int = 20) -> float:
    """A preview of every request of a pass, drawn and encoded on its own, from the pass's starting noise."""
    import torch

    params = jobs[0].params
    noise = torch.stack([denoiser.initial_noise(job.params.seed, params.width, params.height) for job in jobs])
    latents = noise.flatten(2).transpose(1, 2).to(denoiser.device, denoiser.dtype)
    rows = {index: index for index in range(len(jobs))}
    best = float("inf")
    for _ in range(repeats):
        previews = PassPreviews(denoiser.preview_map, params.width, params.height, rows, noise, PreviewBudget())
        started = time.perf_counter()
        drawn = previews(denoiser.pipeline, 0, latents)  # the first step of a pass is always previewed
        best = min(best, time.perf_counter() - started)
        assert len(drawn) == len(jobs)
    return best * 1000


if __name__ == "__main__":
    main()
