"""Previews of the image as it forms: a linear map from klein's latent tokens to RGB, fitted once per VAE.

At each step `callback_on_step_end` sees packed, batch-norm-normalized tokens (B, (H/16)*(W/16), 4*latent_channels),
row-major over the token grid, each token a 2x2 patch of latent pixels of 8x8 image pixels. A linear map (plus bias)
from a token's channels to the RGB of its 2x2 latent pixels draws the image at 1/8 of its side with no VAE decode.
It is fitted by least squares on images of known colour (solid colours, gradients, smooth fields, blocks) encoded by
the checkpoint's own VAE, kept beside the checkpoint as PREVIEW_MAP_FILE, else fitted at load and kept in memory.

An early step's latents are mostly noise, so what is drawn is the image the step predicts: a flow-matching Euler step
is x' = x + (s' - s) v, hence v = (x' - x) / (s' - s) and the predicted image x0 = x' - s' v, from two latents in a row.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from deployments.weights import SETTINGS_FILENAME

logger = logging.getLogger("flux_serve.previews")

PREVIEW_MAP_FILE = "latent_preview.json"
PREVIEW_MAX_SIDE_PX = 128
PREVIEW_JPEG_QUALITY = 70
FIT_SIDE_PX = 128
FIT_IMAGES = 48
FIT_RIDGE = 1e-3
PATCH = 2  # latent pixels per token side
RGB_PER_TOKEN = PATCH * PATCH * 3
MAX_SHARE = 0.05  # of a pass's time, at most, spent on its previews


@dataclass(frozen=True)
class PreviewMap:
    """RGB in [0, 1] of a token's 2x2 latent pixels = tokens @ weight + bias; `weight` is (channels, 12)."""

    weight: torch.Tensor
    bias: torch.Tensor
    vae_sha256: str = ""
    fit_rmse: float = 0.0

    def to_rgb(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        """(n, grid_h * grid_w, channels) tokens -> (n, 3, 2 grid_h, 2 grid_w) float RGB, clamped to [0, 1]."""
        weight, bias = self.weight.to(tokens.device), self.bias.to(tokens.device)
        rgb = tokens.float() @ weight + bias
        rgb = rgb.view(-1, grid_h, grid_w, PATCH, PATCH, 3).permute(0, 5, 1, 3, 2, 4)
        return rgb.reshape(-1, 3, grid_h * PATCH, grid_w * PATCH).clamp(0, 1)

    def to_json(self) -> dict:
        return {
            "about": "flux-serve step previews: rgb of a packed latent token's 2x2 pixels = token @ weight + bias",
            "vae_sha256": self.vae_sha256,
            "fit_rmse": round(self.fit_rmse, 5),
            "weight": [[round(value, 6) for value in row] for row in self.weight.tolist()],
            "bias": [round(value, 6) for value in self.bias.tolist()],
        }

    @classmethod
    def from_json(cls, data: dict) -> PreviewMap:
        weight = torch.tensor(data["weight"], dtype=torch.float32)
        bias = torch.tensor(data["bias"], dtype=torch.float32)
        if weight.ndim != 2 or weight.shape[1] != RGB_PER_TOKEN or bias.shape != (RGB_PER_TOKEN,):
            raise ValueError(f"a preview map is (channels, {RGB_PER_TOKEN}) weights and {RGB_PER_TOKEN} biases")
        return cls(weight, bias, data.get("vae_sha256", ""), float(data.get("fit_rmse", 0.0)))


def fitting_images(count: int = FIT_IMAGES, side_px: int = FIT_SIDE_PX, seed: int = 0) -> torch.Tensor:
    """(count, 3, side, side) RGB in [0, 1]: a quarter each of solid colours, gradients, smooth fields and blocks."""
    generator = torch.Generator().manual_seed(seed)

    def colours(n: int) -> torch.Tensor:
        return torch.rand(n, 3, 1, 1, generator=generator)

    kinds = [count // 4] * 3 + [count - 3 * (count // 4)]
    solid = colours(kinds[0]).expand(-1, -1, side_px, side_px)
    ramp = torch.linspace(0, 1, side_px)
    angles = torch.rand(kinds[1], 1, 1, 1, generator=generator) * 6.2832
    along = (torch.cos(angles) * ramp.view(1, 1, 1, -1) + torch.sin(angles) * ramp.view(1, 1, -1, 1)).clamp(0, 1)
    gradient = colours(kinds[1]) * (1 - along) + colours(kinds[1]) * along
    coarse = torch.rand(kinds[2], 3, 4, 4, generator=generator)
    smooth = F.interpolate(coarse, size=(side_px, side_px), mode="bicubic", align_corners=True).clamp(0, 1)
    blocks = colours(kinds[3]).expand(-1, -1, side_px, side_px).clone()
    for image in blocks:
        for _ in range(3):
            x0, y0 = (int(v) for v in torch.randint(0, side_px * 3 // 4, (2,), generator=generator))
            w, h = (int(v) for v in torch.randint(side_px // 8, side_px // 2, (2,), generator=generator))
            image[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=generator)
    return torch.cat([solid, gradient, smooth, blocks])


def encode_and_decode(pipeline, images: torch.Tensor, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, H, W) RGB in [0, 1] -> the (n, H/16, W/16, channels) tokens the pipeline makes of them (VAE mode,
    2x2 patches, its batch-norm statistics: what its loop holds for a finished image) and what the VAE decodes
    from those tokens, (n, 3, H, W) in [0, 1]: the picture the user will get, which a small VAE may draw in
    other colours than it was given."""
    vae = pipeline.vae
    normalize = pipeline.image_processor.config.do_normalize
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    tokens, decoded = [], []
    with torch.inference_mode():
        for part in images.split(batch):
            pixels = (part * 2 - 1 if normalize else part).to(vae.device, vae.dtype)
            latents = pipeline._encode_vae_image(pixels, generator=None)
            tokens.append(latents.float().permute(0, 2, 3, 1).cpu())
            unpacked = pipeline._unpatchify_latents(latents * std.to(latents) + mean.to(latents))
            drawn = vae.decode(unpacked, return_dict=False)[0].float()
            decoded.append((drawn * 0.5 + 0.5 if normalize else drawn).clamp(0, 1).cpu())
    return torch.cat(tokens), torch.cat(decoded)


def token_targets(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, H/16, W/16, 12): each token's 2x2 latent pixels' mean RGB, in to_rgb's order."""
    pooled = F.avg_pool2d(images, 8)
    n, _, height, width = pooled.shape
    grid = pooled.view(n, 3, height // PATCH, PATCH, width // PATCH, PATCH).permute(0, 2, 4, 3, 5, 1)
    return grid.reshape(n, height // PATCH, width // PATCH, RGB_PER_TOKEN)


def fit_preview_map(pipeline, count: int = FIT_IMAGES, side_px: int = FIT_SIDE_PX, vae_sha256: str = "") -> PreviewMap:
    """Least squares (a little ridge, the bias left free) from this VAE's tokens to the pixels it decodes them to."""
    tokens, decoded = encode_and_decode(pipeline, fitting_images(count, side_px))
    tokens = tokens.reshape(-1, channels_of(pipeline)).double()
    targets = token_targets(decoded).reshape(-1, RGB_PER_TOKEN).double()
    inputs = torch.cat([tokens, torch.ones(len(tokens), 1, dtype=torch.float64)], dim=1)
    ridge = FIT_RIDGE * len(tokens) * torch.eye(inputs.shape[1], dtype=torch.float64)
    ridge[-1, -1] = 0.0
    solution = torch.linalg.solve(inputs.T @ inputs + ridge, inputs.T @ targets)
    rmse = float(((inputs @ solution - targets) ** 2).mean().sqrt())
    return PreviewMap(solution[:-1].float(), solution[-1].float(), vae_sha256, rmse)


def vae_sha256(folder: Path) -> str:
    """The hash of the checkpoint's VAE weights ('' without a VAE file): a stored map is for that VAE only."""
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        path = folder / "vae" / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
    return ""


def write_preview_map(preview_map: PreviewMap, folder: Path) -> None:
    """Store the map beside the checkpoint's weights, atomically (replicas may write it at once)."""
    staging = folder / f".{PREVIEW_MAP_FILE}.{os.getpid()}"
    staging.write_text(json.dumps(preview_map.to_json()) + "\n")
    os.replace(staging, folder / PREVIEW_MAP_FILE)


def built_here(folder: Path) -> bool:
    """An emulated checkpoint this project built (its settings say so): its folder is ours to write in."""
    try:
        return bool(json.loads((folder / SETTINGS_FILENAME).read_text()).get("emulated"))
    except (OSError, ValueError, AttributeError):
        return False


_fitted: dict[str, PreviewMap] = {}
_fitting = threading.Lock()


def preview_map_for(pipeline, source: str) -> PreviewMap | None:
    """The checkpoint's stored map when it was fitted for this VAE; else one fitted now, kept in memory per source
    (the replicas of a process fit once) and, for an emulated checkpoint, stored beside it. None where fitting
    fails: the service then runs without previews."""
    folder = Path(source)
    stored = folder / PREVIEW_MAP_FILE
    try:
        digest = vae_sha256(folder)
        if stored.is_file():
            fitted = PreviewMap.from_json(json.loads(stored.read_text()))
            if fitted.vae_sha256 == digest and fitted.weight.shape[0] == channels_of(pipeline):
                return fitted
            logger.warning("%s was fitted for another VAE; fitting the preview map again", stored)
        with _fitting:
            if source not in _fitted:
                _fitted[source] = fit_preview_map(pipeline, vae_sha256=digest)
                if digest and built_here(folder):
                    write_preview_map(_fitted[source], folder)
            return _fitted[source]
    except Exception:  # previews are a comfort: never a reason for a replica not to start
        logger.warning("no step previews for %s: the preview map could not be made", source, exc_info=True)
        return None


def channels_of(pipeline) -> int:
    return pipeline.transformer.config.in_channels


def encode_preview(rgb: torch.Tensor) -> bytes:
    """(3, h, w) uint8 on the CPU -> a small JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
    return buffer.getvalue()


def preview_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of a preview: 1/8 of the image's side, the long side at most PREVIEW_MAX_SIDE_PX."""
    scale = min(1 / 8, PREVIEW_MAX_SIDE_PX / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class PreviewBudget:
    """When a pass may draw a preview: at most every `every_steps` steps, and only while the time its previews took
    is at most `max_share` of the rest of the pass's time (so one preview at most goes over)."""

    def __init__(self, every_steps: int = 1, max_share: float = MAX_SHARE, clock=time.perf_counter):
        self.every_steps = every_steps
        self.max_share = max_share
        self.clock = clock
        self.started_at = clock()
        self.spent_s = 0.0
        self.last_step: int | None = None

    def start(self) -> None:
        self.started_at, self.spent_s, self.last_step = self.clock(), 0.0, None

    def due(self, step: int) -> bool:
        if self.last_step is not None and step - self.last_step < self.every_steps:
            return False
        if self.spent_s > self.max_share * (self.clock() - self.started_at - self.spent_s):
            return False
        self.last_step = step
        return True

    @contextmanager
    def timing(self):
        """Count the time of the block as the previews'."""
        started = self.clock()
        try:
            yield
        finally:
            self.spent_s += self.clock() - started


class PassPreviews:
    """One forward pass's previews: the first image of each request that asked for them, as often as `budget`
    allows. On a GPU the pixels come back by an asynchronous copy and are encoded at a later step, so the loop
    never waits for them (the last step's are dropped: the finished image follows at once)."""

    def __init__(
        self, preview_map: PreviewMap, width: int, height: int, rows: dict[int, int], noise: torch.Tensor, budget
    ):
        """`rows`: request index -> its first image's row in the pass's latents; `noise`: the pass's starting
        latents (n, channels, H/16, W/16), so the first step is previewed too."""
        self.map = preview_map
        self.grid = (height // 16, width // 16)
        self.size = preview_size(width, height)
        self.rows = rows
        self.previous = noise.flatten(2).transpose(1, 2)  # packed as the pipeline packs it
        self.budget = budget
        self.pending: list[tuple[int, object, torch.Tensor]] = []  # (step, done event or None, uint8 pixels)

    def start(self) -> None:
        self.budget.start()

    def __call__(self, pipeline, step: int, latents: torch.Tensor | None) -> dict[int, tuple[int, bytes]]:
        """Request index -> (pass step index, JPEG) of the previews ready now."""
        if latents is None:
            return {}
        previous, self.previous = self.previous, latents
        if self.budget.due(step):
            with self.budget.timing():
                self._draw(pipeline.scheduler, step, previous, latents)
        return self._ready()

    def _draw(self, scheduler, step: int, previous: torch.Tensor, latents: torch.Tensor) -> None:
        rows = list(self.rows.values())
        predicted = latents[rows].float()
        sigma_before, sigma_after = step_sigmas(scheduler)
        if sigma_before is not None and sigma_before != sigma_after:
            velocity = (predicted - previous[rows].to(predicted.device).float()) / (sigma_after - sigma_before)
            predicted = predicted - sigma_after * velocity
        rgb = self.map.to_rgb(predicted, *self.grid)
        if rgb.shape[-1] != self.size[0] or rgb.shape[-2] != self.size[1]:
            rgb = F.interpolate(rgb, size=(self.size[1], self.size[0]), mode="area")
        pixels = rgb.mul(255).round().to(torch.uint8)
        if pixels.device.type == "cuda":
            host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self.pending.append((step, done, host))
        else:
            self.pending.append((step, None, pixels.cpu()))

    def _ready(self) -> dict[int, tuple[int, bytes]]:
        newest = None
        while self.pending and (self.pending[0][1] is None or self.pending[0][1].query()):
            newest = self.pending.pop(0)
        if newest is None:
            return {}
        step, _done, pixels = newest
        with self.budget.timing():
            return {request: (step, encode_preview(pixels[row])) for row, request in enumerate(self.rows)}


def step_sigmas(scheduler) -> tuple[float | None, float]:
    """The noise levels the step just taken went from and to, from a flow-matching scheduler; (None, 0) else."""
    sigmas = getattr(scheduler, "sigmas", None)
    index = getattr(scheduler, "step_index", None)
    if sigmas is None or index is None or not 1 <= index < len(sigmas):
        return None, 0.0
    return float(sigmas[index - 1]), float(sigmas[index])


def pass_previews(preview_map: PreviewMap | None, forward, noise: torch.Tensor) -> PassPreviews | None:
    """The previews of a forward pass (deployments.denoiser.ForwardPass) starting from `noise`; None when no
    request of it asked for them (`params.preview`) or there is no map."""
    rows: dict[int, int] = {}
    for row, slot in enumerate(forward.slots):
        if forward.jobs[slot.request_index].params.preview and slot.request_index not in rows:
            rows[slot.request_index] = row
    if preview_map is None or not rows:
        return None
    params = forward.params
    return PassPreviews(preview_map, params.width, params.height, rows, noise, PreviewBudget())
