"""Step previews: the latent-to-RGB map, the pictures a pass draws, their budget, and where they travel."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import Flux2KleinPipeline
from PIL import Image

from deployments import previews
from deployments.contracts import DenoiseJob, GenerationParams
from deployments.previews import (
    PREVIEW_MAP_FILE,
    PreviewBudget,
    PreviewMap,
    encode_and_decode,
    fit_preview_map,
    fitting_images,
    preview_map_for,
    preview_size,
)
from deployments.progress import Progress, StepClock, StepHook
from deployments.registry import get_variant
from deployments.weights import describe_weights
from serve_apps.api.events import JobEvent, state_event, without_seen_preview
from serve_apps.live.state import LiveState

SHAPES = "deployments/checkpoints/flux2-klein-shapes"
TINY_DEFAULTS = describe_weights(get_variant("flux-2-klein-4b"), "emulated:tiny").defaults


class Recorder:
    def __init__(self):
        self.seen: list[Progress] = []

    def on_step(self, progress: Progress) -> None:
        self.seen.append(progress)

    def cancel_requested(self, _job_id: str) -> bool:
        return False


class LinearVae:
    """A VAE whose latents are a fixed linear mix of each 8x8 block's mean colour: a linear map undoes it exactly."""

    def __init__(self, channels: int = 8):
        generator = torch.Generator().manual_seed(1)
        self.mix = torch.randn(channels, 3, generator=generator)
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.bn = SimpleNamespace(
            running_mean=torch.randn(4 * channels, generator=generator),
            running_var=torch.rand(4 * channels, generator=generator) + 0.5,
        )
        self.config = SimpleNamespace(batch_norm_eps=1e-4)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ck,nkhw->nchw", self.mix, F.avg_pool2d(pixels, 8))

    def decode(self, latents: torch.Tensor, return_dict: bool = False):
        colours = torch.einsum("kc,nchw->nkhw", torch.linalg.pinv(self.mix), latents)
        return (F.interpolate(colours, scale_factor=8, mode="nearest"),)


class LinearPipeline:
    """What the map is fitted through, with klein's own patching and batch-norm normalization."""

    _patchify_latents = staticmethod(Flux2KleinPipeline._patchify_latents)
    _unpatchify_latents = staticmethod(Flux2KleinPipeline._unpatchify_latents)

    def __init__(self):
        self.vae = LinearVae()
        self.image_processor = SimpleNamespace(config=SimpleNamespace(do_normalize=True))
        self.transformer = SimpleNamespace(config=SimpleNamespace(in_channels=32))

    def _encode_vae_image(self, image: torch.Tensor, generator=None) -> torch.Tensor:
        latents = self._patchify_latents(self.vae.encode_pixels(image))
        mean = self.vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps)
        return (latents - mean) / std


def as_tokens(tokens: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(n, h, w, channels) -> packed (n, h*w, channels) as the pipeline's loop holds them, and the grid."""
    n, height, width, channels = tokens.shape
    return tokens.reshape(n, height * width, channels), height, width


def test_the_fitted_map_draws_known_colours_and_their_layout():
    pipeline = LinearPipeline()
    fitted = fit_preview_map(pipeline, count=16, side_px=64)
    assert fitted.fit_rmse < 0.01 and fitted.weight.shape == (32, 12)
    red = torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    tokens, _decoded = encode_and_decode(pipeline, red)
    drawn = fitted.to_rgb(*as_tokens(tokens))
    assert drawn.shape == (1, 3, 8, 8)
    assert torch.allclose(drawn.mean((0, 2, 3)), torch.tensor([0.9, 0.2, 0.1]), atol=0.02)
    held_out = fitting_images(8, 64, seed=9)  # gradients and blocks: every latent pixel in its place
    tokens, _decoded = encode_and_decode(pipeline, held_out)
    assert (fitted.to_rgb(*as_tokens(tokens)) - F.avg_pool2d(held_out, 8)).abs().max() < 0.05


def test_the_map_round_trips_through_its_file():
    fitted = fit_preview_map(LinearPipeline(), count=8, side_px=64, vae_sha256="abc")
    again = PreviewMap.from_json(json.loads(json.dumps(fitted.to_json())))
    assert again.vae_sha256 == "abc" and torch.allclose(again.weight, fitted.weight, atol=1e-5)
    with pytest.raises(ValueError, match="preview map"):
        PreviewMap.from_json({"weight": [[0.0] * 5], "bias": [0.0] * 12})


def test_the_shapes_checkpoint_ships_its_map_for_its_own_vae(monkeypatch):
    stored = json.loads((previews.Path(SHAPES) / PREVIEW_MAP_FILE).read_text())
    assert stored["vae_sha256"] == previews.vae_sha256(previews.Path(SHAPES))
    monkeypatch.setattr(previews, "fit_preview_map", lambda *_a, **_k: pytest.fail("the stored map is used"))
    pipeline = SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(in_channels=32)))
    assert preview_map_for(pipeline, SHAPES).weight.shape == (32, 12)


def test_a_map_that_cannot_be_made_means_no_previews_not_a_failed_start():
    assert preview_map_for(SimpleNamespace(), "/no/such/checkpoint") is None


@pytest.mark.parametrize(
    ("width", "height", "expected"), [(512, 512, (64, 64)), (2048, 1024, (128, 64)), (256, 144, (32, 18))]
)
def test_previews_are_an_eighth_of_the_side_at_most_128_px(width, height, expected):
    assert preview_size(width, height) == expected


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_keeps_previews_under_their_share_of_the_pass():
    clock = FakeClock()
    budget = PreviewBudget(every_steps=1, max_share=0.05, clock=clock)
    budget.start()
    drawn = []
    for step in range(200):
        clock.now += 1.0  # a step
        if budget.due(step):
            with budget.timing():
                clock.now += 0.2  # a preview costing a fifth of a step
            drawn.append(step)
    assert budget.spent_s <= 0.05 * (clock.now - budget.spent_s) + 0.2, "at most one preview over the share"
    assert 40 <= len(drawn) <= 55, "and as many as the share allows"


def test_the_budget_keeps_its_step_interval_when_previews_are_free():
    clock = FakeClock()
    budget = PreviewBudget(every_steps=3, clock=clock)
    budget.start()
    drawn = []
    for step in range(10):
        clock.now = step + 1.0
        if budget.due(step):
            drawn.append(step)
    assert drawn == [0, 3, 6, 9]


class FakePreviews:
    """Pictures drawn at given pass steps: {step: {request: (step, bytes)}}."""

    def __init__(self, drawn: dict):
        self.drawn = drawn
        self.started = False

    def start(self) -> None:
        self.started = True

    def __call__(self, _pipeline, step: int, _latents) -> dict:
        return self.drawn.get(step, {})


def test_the_hook_sends_each_request_its_latest_preview_with_the_step_it_was_drawn_at():
    observer = Recorder()
    hook = StepHook(StepClock([(4, (0, 1))]), 0, {0: "a", 1: "b"}, observer)
    hook.start(FakePreviews({1: {0: (1, b"jpeg-1")}, 3: {0: (3, b"jpeg-3")}}))
    for step in range(4):
        hook(None, step, None, {"latents": None})
    shown = [(p.job_id, p.step, p.preview, p.preview_step) for p in observer.seen]
    assert [s for s in shown if s[0] == "a"] == [
        ("a", 1, None, None),
        ("a", 2, b"jpeg-1", 2),
        ("a", 3, b"jpeg-1", 2),
        ("a", 4, b"jpeg-3", 4),
    ]
    assert all(preview is None for job, _step, preview, _at in shown if job == "b"), "b asked for none"


def make_job(embedding, **fields) -> DenoiseJob:
    params = GenerationParams.with_defaults(TINY_DEFAULTS, "a prompt", width=256, height=256, seed=5, **fields)
    return DenoiseJob(params, embedding, job_id=f"job-{fields.get('preview', True)}")


def test_a_denoising_pass_previews_the_requests_that_ask_and_only_those(denoiser, prompt):
    observer = Recorder()
    jobs = [make_job(prompt, steps=12), make_job(prompt, steps=12, preview=False)]
    results = denoiser.generate(jobs, observer)
    assert all(len(result.images) == 1 for result in results)
    pictures = {p.preview_step: p.preview for p in observer.seen if p.job_id == "job-True" and p.preview}
    assert len(pictures) >= 2, "several steps are previewed while the image forms"
    for step, data in pictures.items():
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == (32, 32) and len(data) < 4096
        assert 1 <= step <= 12
    assert not any(p.preview for p in observer.seen if p.job_id == "job-False"), "preview: false makes none"


def test_the_live_state_drops_a_preview_when_its_job_ends_and_holds_few():
    state = LiveState(max_previews=2)
    for job in ("a", "b", "c"):
        state.publish(Progress(job, 2, 4, preview=b"jpeg", preview_step=2))
    assert state.progress("a").preview is None and state.progress("a").step == 2, "the oldest lost its picture"
    assert state.progress("c").preview == b"jpeg"
    state.finish("c")
    assert state.progress("c").preview is None and state.progress("c").step == 2, "an ended job keeps no picture"
    state.publish(Progress("b", 3, 4))
    assert state.progress("b").preview is None


def test_progress_events_carry_a_picture_once_per_stream():
    preview = {"step": 2, "image": "data:image/jpeg;base64,AAAA"}
    job = {"status": "Pending", "attempts": 1, "progress": {"step": 3, "total": 4}, "preview": preview}
    event = state_event(job)
    assert event.data["preview"] == preview
    sent, last = without_seen_preview(event, None)
    assert sent.data["preview"] == preview and last == preview
    again, last = without_seen_preview(JobEvent(event.name, event.id + 1, dict(event.data)), last)
    assert "preview" not in again.data and again.data["step"] == 3
