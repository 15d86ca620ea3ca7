"""Train the offline default model: FLUX.2 [klein] architecture, learned on the shapes world.

    python -m training.shapes_model --out deployments/checkpoints/flux2-klein-shapes
    python -m training.shapes_model --out B --vae-from A --vae-steps 0 --transformer-from A   # train on

Trains the VAE (`AutoencoderKLFlux2`, 8x downsampling) on drawings, stores its latent
statistics in `vae.bn`, then trains `Flux2Transformer2DModel` with the rectified-flow
objective against a frozen small Qwen3 encoder and a locally trained tokenizer, with 10 %
caption dropout so classifier-free guidance works. Saves a pipeline that
`Flux2KleinPipeline.from_pretrained` loads unchanged, in fp16, plus the text settings and
sampling defaults in flux_serve.json, and scores held-out combinations.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
from tqdm import tqdm

from deployments.emulation import SETTINGS_FILENAME, build_components, encoder_out_layers, get_size
from deployments.progress import StepObserver
from deployments.registry import get_variant
from training import loop
from training.dataset import to_pixels
from training.flow_matching import flow_matching_loss, images_to_tokens, set_latent_statistics, token_ids
from training.shapes_world import IMAGE_SIDE_PX, Scene, adherence, draw, held_out_scenes, training_scenes

SIZE = "shapes"
VARIANT = "flux-2-klein-4b"


@dataclass
class TrainingConfig:
    seed: int = 0
    images: int = 16000
    vae_steps: int = 4000
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_from: str = ""
    transformer_from: str = ""
    kl_weight: float = 1e-6
    transformer_steps: int = 3500
    transformer_batch: int = 64
    transformer_lr: float = 6e-4
    warmup_steps: int = 100
    ema_decay: float = 0.995
    caption_dropout: float = 0.1
    default_steps: int = 16
    default_guidance: float = 3.0
    eval_seeds: int = 4


def train_vae(
    vae,
    pixels: torch.Tensor,
    config: TrainingConfig,
    generator: torch.Generator,
    observer: StepObserver | None = None,
    job_id: str = "",
) -> float:
    """L1 + MSE on the posterior mode: flat shapes need sharp edges more than a smooth prior."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    losses = [float("nan")]

    def step(index: int) -> None:
        batch = pixels[torch.randint(len(pixels), (config.vae_batch,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.mode()).sample
        error = reconstruction - batch
        loss = error.abs().mean() + error.pow(2).mean() + config.kl_weight * posterior.kl().mean()
        losses.append(loop.optimizer_step(optimizer, loss))
        if (index + 1) % 500 == 0:
            vae.eval()
            scores = reconstruction_scores(vae, held_out_scenes(), config.seed + 1)
            tqdm.write(f"VAE step {index + 1}: held-out reconstructions {scores}")
            vae.train()

    vae.train()
    bar = loop.TqdmObserver("VAE", postfix=lambda: {"loss": f"{losses[-1]:.4f}"})
    schedule = loop.warmup_cosine_schedule(optimizer, config.vae_steps, 20)
    loop.run_steps(config.vae_steps, step, loop.Observers(bar, observer), job_id, schedule)
    vae.eval()
    return losses[-1]


def train_transformer(
    transformer, tokens, caption_index, embeddings, empty_embedding, config, generator, observer=None, job_id=""
):
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=config.transformer_lr, weight_decay=0.01)
    ema = loop.ema_copy(transformer)
    image_ids, text_ids = token_ids(config.transformer_batch, 4, 4, embeddings.shape[1])
    losses = []

    def step(_: int) -> None:
        rows = torch.randint(len(tokens), (config.transformer_batch,), generator=generator)
        prompt_embeds = embeddings[caption_index[rows]]
        dropped = torch.rand(config.transformer_batch, generator=generator) < config.caption_dropout
        prompt_embeds[dropped] = empty_embedding
        loss = flow_matching_loss(transformer, tokens[rows], prompt_embeds, image_ids, text_ids, generator)
        losses.append(loop.ema_step(optimizer, loss, transformer, ema, config.ema_decay))

    transformer.train()
    bar = loop.TqdmObserver("transformer", postfix=lambda: {"loss": f"{np.mean(losses[-50:]):.4f}"})
    schedule = loop.warmup_cosine_schedule(optimizer, config.transformer_steps, config.warmup_steps)
    loop.run_steps(config.transformer_steps, step, loop.Observers(bar, observer), job_id, schedule)
    return ema, losses


def to_images(pixels: torch.Tensor) -> list:
    from PIL import Image

    array = ((pixels.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    return [Image.fromarray(image) for image in array]


@torch.no_grad()
def reconstruction_scores(vae, scenes: list[Scene], seed: int) -> dict[str, float]:
    """The scorer on VAE reconstructions: how much of the world the latent space can hold."""
    rng = random.Random(seed)
    pixels = to_pixels([draw(scene, rng) for scene in scenes], IMAGE_SIDE_PX)
    reconstructions = to_images(vae.decode(vae.encode(pixels).latent_dist.mode()).sample)
    return adherence(scenes, [[image] for image in reconstructions])


def evaluate(pipeline, settings: dict, scenes: list[Scene], seeds: int) -> dict[str, float]:
    """Share of images whose colour, background and shape the scorer reads as asked."""
    images = []
    for scene in scenes:
        images.append([])
        for seed in range(seeds):
            image = pipeline(
                prompt=scene.caption,
                height=64,
                width=64,
                num_inference_steps=settings["default_steps"],
                guidance_scale=settings["default_guidance"],
                generator=torch.Generator().manual_seed(seed),
                max_sequence_length=settings["max_sequence_length"],
                text_encoder_out_layers=tuple(settings["text_encoder_out_layers"]),
            ).images[0]
            images[-1].append(image)
    return adherence(scenes, images)


def train(out_dir: Path, config: TrainingConfig, observer: StepObserver | None = None, job_id: str = "") -> dict:
    """The VAE, then the transformer; each phase reports its own steps (`of` its own step count) to
    `observer` beside the tqdm bars."""
    started = time.time()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    variant = get_variant(VARIANT)
    pipeline = build_components(variant, SIZE, seed=config.seed)
    pipeline.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipeline.register_to_config(is_distilled=False)
    pipeline.set_progress_bar_config(disable=True)
    size = get_size(SIZE)
    settings = {
        "emulated": True,
        "trained": True,
        "variant": "shapes",
        "size": SIZE,
        "text_encoder_family": "shapes-qwen3",
        "max_sequence_length": size.max_sequence_length,
        "text_encoder_out_layers": list(encoder_out_layers(size.encoders[variant.text_encoder.family].num_layers)),
        "default_steps": config.default_steps,
        "default_guidance": config.default_guidance,
        "distilled": False,
        "native_side_px": 64,
    }

    scenes = training_scenes()
    drawn = [rng.choice(scenes) for _ in range(config.images)]
    pixels = to_pixels([draw(scene, rng) for scene in drawn], IMAGE_SIDE_PX)
    if config.vae_from:
        pipeline.register_modules(vae=AutoencoderKLFlux2.from_pretrained(config.vae_from, subfolder="vae").float())
    # JSON has no NaN: no VAE steps, no VAE loss
    vae_loss = train_vae(pipeline.vae, pixels, config, generator, observer, job_id) if config.vae_steps else None
    settings["vae_reconstruction_scores"] = reconstruction_scores(pipeline.vae, held_out_scenes(), config.seed + 1)
    print("VAE reconstruction of held-out scenes:", settings["vae_reconstruction_scores"], flush=True)
    with torch.no_grad():
        set_latent_statistics(pipeline.vae, pixels)
        tokens = torch.cat([images_to_tokens(pipeline.vae, pixels[i : i + 256]) for i in range(0, len(pixels), 256)])

    captions = sorted({scene.caption for scene in scenes})
    with torch.no_grad():
        embeddings, _ = pipeline.encode_prompt(
            prompt=captions + [""],
            device=torch.device("cpu"),
            max_sequence_length=settings["max_sequence_length"],
            text_encoder_out_layers=tuple(settings["text_encoder_out_layers"]),
        )
    caption_index = torch.tensor([captions.index(scene.caption) for scene in drawn])
    if config.transformer_from:
        trained = Flux2Transformer2DModel.from_pretrained(config.transformer_from, subfolder="transformer")
        pipeline.register_modules(transformer=trained.float())
    ema, losses = train_transformer(
        pipeline.transformer,
        tokens,
        caption_index,
        embeddings[:-1],
        embeddings[-1],
        config,
        generator,
        observer,
        job_id,
    )
    pipeline.transformer = ema.eval()
    pipeline.register_modules(transformer=ema)

    for module in (pipeline.transformer, pipeline.vae, pipeline.text_encoder):
        module.to(torch.float16)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    train_seconds = time.time() - started

    from deployments.loading import load_pipeline, pick_device, resolve_weights

    transformer_millions = sum(p.numel() for p in pipeline.transformer.parameters()) / 1e6
    settings["description"] = (
        f"trained offline default: the FLUX.2 [klein] architecture at a tiny size ({transformer_millions:.1f}M-parameter "
        "transformer), trained by this project on a synthetic world of coloured circles, squares "
        "and triangles; draws prompts like 'a red circle on a blue background' at 64x64. It stands "
        "in for every variant; set weights to the real checkpoints for real images"
    )
    settings["training"] = {
        **asdict(config),
        "seconds": round(train_seconds),
        "vae_loss": vae_loss,
        "final_loss": float(np.mean(losses[-100:])),
    }
    (out_dir / SETTINGS_FILENAME).write_text(json.dumps(settings, indent=2, sort_keys=True))
    reloaded = load_pipeline(resolve_weights(variant, str(out_dir)), pick_device("cpu"), torch.float32)
    settings["held_out_scores"] = evaluate(reloaded, settings, held_out_scenes(), seeds=config.eval_seeds)
    settings["training_scores"] = evaluate(reloaded, settings, training_scenes()[::12], seeds=config.eval_seeds)
    (out_dir / SETTINGS_FILENAME).write_text(json.dumps(settings, indent=2, sort_keys=True))
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("deployments/checkpoints/flux2-klein-shapes"))
    for name, default in asdict(TrainingConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = vars(parser.parse_args())
    out_dir = args.pop("out")
    settings = train(out_dir, TrainingConfig(**args))
    shown = ("vae_reconstruction_scores", "held_out_scores", "training_scores", "training")
    print(json.dumps({k: settings[k] for k in shown}, indent=2))


if __name__ == "__main__":
    main()
