"""Teach the shipped shapes model to edit and to read Russian, at several aspect ratios.

    python -m training.shapes_multitask --base deployments/checkpoints/flux2-klein-shapes --out B

Fine-tunes the trained transformer on both tasks at once, each step one task at one size
bucket: text-to-image from English or Russian captions, and edits (source drawing +
instruction -> target drawing, English or Russian). Edits condition exactly as
`Flux2KleinPipeline(image=...)` does at serve time: the pipeline's own `_encode_vae_image`
(VAE mode, patchify, `vae.bn` normalisation), `_pack_latents` and `_prepare_image_ids`
(time offset 10 for the first reference), appended after the noisy tokens. The VAE stays
frozen; the tokenizer and the frozen encoder's embedding table grow by the new words
(training/shapes_tokenizer.py) without moving an existing id. Writes the EMA weights every
`save_every` steps, so a partial run is usable, then scores the final checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import Flux2KleinPipeline
from PIL import Image
from tqdm import tqdm

from deployments.progress import StepObserver
from training import loop
from training.flow_matching import flow_matching_loss, token_ids
from training.shapes_edits import Edit, draw_pair, training_edits
from training.shapes_language import caption, plain_e
from training.shapes_scoring import SETTINGS_FILENAME, score_checkpoint
from training.shapes_tokenizer import extend_embeddings, extend_tokenizer, new_sentences, tie_translations
from training.shapes_world import BUCKETS_PX, IMAGE_SIDE_PX, Scene, place, render, training_scenes

SQUARE = (IMAGE_SIDE_PX, IMAGE_SIDE_PX)
TOKEN_PX = 16  # one latent token per 16x16 pixels: 8x VAE, 2x2 patches


@dataclass
class MultitaskConfig:
    seed: int = 0
    items_per_task: int = 8000
    square_share: float = 0.5
    steps: int = 2000
    batch: int = 32
    lr: float = 3e-4
    warmup_steps: int = 50
    ema_decay: float = 0.995
    caption_dropout: float = 0.1
    # Edits trained with an empty instruction and the source as the target: "no instruction keeps the
    # image". The pipeline's guidance pass runs "" with the same references, so guidance then pushes
    # from the unchanged source toward the asked change, and copying what is kept is learned early.
    edit_keep_share: float = 0.25
    # Copying a reference means each noisy token attending to the reference token at its own place, and
    # RoPE tells neighbours on a 4x4 grid apart only weakly unless the QK-norm scales on its fast pairs grow
    # several-fold; at the base rate that takes tens of thousands of steps, so those scales learn faster.
    qk_norm_lr_multiplier: float = 20.0
    edit_guidance: float = 1.0  # the sampling default for edits this teaches (flux_serve.json default_edit_guidance)
    edit_share: float = 0.5
    russian_share: float = 0.5
    tie_translations: bool = True  # Russian words read as their English words (see training/shapes_tokenizer.py)
    save_every: int = 250
    eval_seeds: int = 4  # 0: skip scoring


@dataclass
class Pool:
    """Pre-encoded items of one task at one size: targets, references for edits, what each asks for."""

    targets: torch.Tensor
    references: torch.Tensor | None
    asks: list  # a Scene per text-to-image item, an Edit per edit


@torch.no_grad()
def encode_tokens(pipeline: Flux2KleinPipeline, images: list[Image.Image], batch_size: int = 128) -> torch.Tensor:
    """Drawings -> packed, normalised latent tokens through the pipeline's own reference encoding."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images]) / 127.5 - 1.0
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    return torch.cat(
        [
            pipeline._pack_latents(pipeline._encode_vae_image(pixels[i : i + batch_size], generator=None))
            for i in range(0, len(pixels), batch_size)
        ]
    )


def bucket_counts(total: int, square_share: float) -> dict[tuple[int, int], int]:
    """Items per size bucket: `square_share` at 64x64, where every score is taken, the rest evenly."""
    others = [bucket for bucket in BUCKETS_PX if bucket != SQUARE]
    counts = {bucket: int(total * (1 - square_share)) // len(others) for bucket in others}
    return {SQUARE: total - sum(counts.values()), **counts}


def build_pools(pipeline, config: MultitaskConfig, rng: random.Random) -> dict[str, dict[tuple[int, int], Pool]]:
    """Random drawings of training scenes and training edits, per task and size, encoded once."""
    scenes, edits = training_scenes(), training_edits()
    pools: dict[str, dict[tuple[int, int], Pool]] = {"t2i": {}, "edit": {}}
    for (width_px, height_px), count in bucket_counts(config.items_per_task, config.square_share).items():
        asked_scenes = [rng.choice(scenes) for _ in range(count)]
        drawings = [render(scene, place(rng, width_px, height_px), width_px, height_px) for scene in asked_scenes]
        pools["t2i"][width_px, height_px] = Pool(encode_tokens(pipeline, drawings), None, asked_scenes)
        asked_edits = [rng.choice(edits) for _ in range(count)]
        pairs = [draw_pair(edit, rng, width_px, height_px) for edit in asked_edits]
        pools["edit"][width_px, height_px] = Pool(
            encode_tokens(pipeline, [target for _, target in pairs]),
            encode_tokens(pipeline, [source for source, _ in pairs]),
            asked_edits,
        )
        print(f"pool {width_px}x{height_px}: {count} drawings and {count} edit pairs", flush=True)
    return pools


def all_prompts() -> list[str]:
    """Every prompt a training step can pick: captions and instructions in both languages, and the empty one."""
    english = [caption(scene, "en") for scene in training_scenes()]
    english += [edit.instruction("en") for edit in training_edits()]
    return sorted(set(english) | set(new_sentences()) | {""})


def pick_prompt(ask: Scene | Edit, config: MultitaskConfig, rng: random.Random) -> str:
    """English or Russian (ё or е, equally), dropped to "" for guidance: edits at `edit_keep_share`."""
    if rng.random() < (config.edit_keep_share if isinstance(ask, Edit) else config.caption_dropout):
        return ""
    language = "ru" if rng.random() < config.russian_share else "en"
    text = ask.instruction(language) if isinstance(ask, Edit) else caption(ask, language)
    return plain_e(text) if language == "ru" and rng.random() < 0.5 else text


@torch.no_grad()
def encode_prompts(pipeline: Flux2KleinPipeline, settings: dict, prompts: list[str]) -> torch.Tensor:
    return torch.cat(
        [
            pipeline.encode_prompt(
                prompt=prompts[i : i + 64],
                device=torch.device("cpu"),
                max_sequence_length=settings["max_sequence_length"],
                text_encoder_out_layers=tuple(settings["text_encoder_out_layers"]),
            )[0]
            for i in range(0, len(prompts), 64)
        ]
    )


def reference_ids(batch_size: int, height_tokens: int, width_tokens: int) -> torch.Tensor:
    """The pipeline's ids for one reference image per sample (time offset 10, then rows and columns)."""
    grid = torch.zeros(1, 1, height_tokens, width_tokens)
    return Flux2KleinPipeline._prepare_image_ids([grid]).repeat(batch_size, 1, 1)


def parameter_groups(transformer, config: MultitaskConfig) -> list[dict]:
    """The attention QK-norm scales at `qk_norm_lr_multiplier` times the rate, the rest at `lr`."""
    qk_norms, others = [], []
    for name, parameter in transformer.named_parameters():
        (qk_norms if ".norm_q." in name or ".norm_k." in name else others).append(parameter)
    return [
        {"params": others, "lr": config.lr},
        {"params": qk_norms, "lr": config.lr * config.qk_norm_lr_multiplier, "weight_decay": 0.0},
    ]


def pick_bucket(config: MultitaskConfig, rng: random.Random) -> tuple[int, int]:
    return SQUARE if rng.random() < config.square_share else rng.choice([b for b in BUCKETS_PX if b != SQUARE])


def save(pipeline: Flux2KleinPipeline, transformer, out_dir: Path, settings: dict) -> None:
    """fp16 copies of the components in `save_pretrained` layout, with flux_serve.json beside them."""
    shipped = Flux2KleinPipeline(
        scheduler=pipeline.scheduler,
        vae=copy.deepcopy(pipeline.vae).half(),
        text_encoder=copy.deepcopy(pipeline.text_encoder).half(),
        tokenizer=pipeline.tokenizer,
        transformer=copy.deepcopy(transformer).half(),
        is_distilled=False,
    )
    shipped.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / SETTINGS_FILENAME).write_text(json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False))


def next_stage(settings: dict) -> int:
    """The number under which the base's own training is kept, after the stages it already records."""
    return 1 + max((int(key.rsplit("_", 1)[1]) for key in settings if key.startswith("training_stage_")), default=0)


def describe(transformer) -> str:
    millions = sum(parameter.numel() for parameter in transformer.parameters()) / 1e6
    return (
        f"trained offline default: the FLUX.2 [klein] architecture at a tiny size ({millions:.1f}M-parameter "
        "transformer), trained by this project on a synthetic world of coloured circles, squares and triangles; "
        "draws prompts like 'a red circle on a blue background' or 'красный круг на синем фоне' at 64x64 and "
        "nearby aspect ratios, and edits a reference image: 'make the background yellow', 'make the circle "
        "green', 'turn the circle into a square' (or 'сделай фон жёлтым', 'сделай круг зелёным', 'преврати круг "
        "в квадрат'). It stands in for every variant; set weights to the real checkpoints for real images"
    )


def train(
    base_dir: Path, out_dir: Path, config: MultitaskConfig, observer: StepObserver | None = None, job_id: str = ""
) -> dict:
    started = time.time()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    pipeline = Flux2KleinPipeline.from_pretrained(base_dir, dtype=torch.float32)
    base_settings = json.loads((base_dir / SETTINGS_FILENAME).read_text())
    tokenizer = extend_tokenizer(pipeline.tokenizer, new_sentences())
    extend_embeddings(pipeline.text_encoder, len(tokenizer), seed=config.seed)
    if config.tie_translations:
        print(f"tied {tie_translations(pipeline.text_encoder, tokenizer)} Russian rows to English ones", flush=True)
    pipeline.register_modules(tokenizer=tokenizer)

    prompts = all_prompts()
    prompt_index = {prompt: index for index, prompt in enumerate(prompts)}
    embeddings = encode_prompts(pipeline, base_settings, prompts)
    pools = build_pools(pipeline, config, rng)
    settings = {
        **{key: value for key, value in base_settings.items() if not key.startswith(("held_out", "training_scores"))},
        f"training_stage_{next_stage(base_settings)}": base_settings["training"],
        "description": describe(pipeline.transformer),
        "buckets_px": [list(bucket) for bucket in BUCKETS_PX],
        "default_edit_guidance": config.edit_guidance,
    }

    transformer = pipeline.transformer.train()
    ema = loop.ema_copy(transformer).eval()
    optimizer = torch.optim.AdamW(parameter_groups(transformer, config), weight_decay=0.01)
    losses: dict[str, list[float]] = {"t2i": [], "edit": []}

    def step(step_index: int) -> None:
        task = "edit" if rng.random() < config.edit_share else "t2i"
        width_px, height_px = pick_bucket(config, rng)
        pool = pools[task][width_px, height_px]
        rows = torch.randint(len(pool.targets), (config.batch,), generator=generator)
        chosen = [prompt_index[pick_prompt(pool.asks[row], config, rng)] for row in rows.tolist()]
        prompt_embeds = embeddings[chosen]
        targets = pool.targets[rows]
        height_tokens, width_tokens = height_px // TOKEN_PX, width_px // TOKEN_PX
        image_ids, text_ids = token_ids(config.batch, height_tokens, width_tokens, embeddings.shape[1])
        conditioning = {}
        if pool.references is not None:
            references = pool.references[rows]
            kept = torch.tensor([index == prompt_index[""] for index in chosen]).view(-1, 1, 1)
            targets = torch.where(kept, references, targets)
            conditioning = {
                "reference_tokens": references,
                "reference_ids": reference_ids(config.batch, height_tokens, width_tokens),
            }
        loss = flow_matching_loss(transformer, targets, prompt_embeds, image_ids, text_ids, generator, **conditioning)
        losses[task].append(loop.ema_step(optimizer, loss, transformer, ema, config.ema_decay))
        if (step_index + 1) % config.save_every == 0 or step_index + 1 == config.steps:
            settings["training"] = {
                **asdict(config),
                "base": str(base_dir),
                "steps_done": step_index + 1,
                "seconds": round(time.time() - started),
                "final_loss": {name: float(np.mean(values[-100:])) for name, values in losses.items() if values},
            }
            save(pipeline, ema, out_dir, settings)
            tqdm.write(f"step {step_index + 1}: saved {out_dir} ({settings['training']['final_loss']})")

    def running_losses() -> dict:
        return {name: f"{np.mean(values[-50:]):.4f}" for name, values in losses.items() if values}

    bar = loop.TqdmObserver("multitask", postfix=running_losses, mininterval=10)
    schedule = loop.warmup_cosine_schedule(optimizer, config.steps, config.warmup_steps)
    loop.run_steps(config.steps, step, loop.Observers(bar, observer), job_id, schedule)

    if config.eval_seeds:
        settings.update(score_checkpoint(out_dir, seeds=config.eval_seeds))
    (out_dir / SETTINGS_FILENAME).write_text(json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False))
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("deployments/checkpoints/flux2-klein-shapes"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads: on a shared CPU one is fastest")
    for name, default in asdict(MultitaskConfig()).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = vars(parser.parse_args())
    torch.set_num_threads(args.pop("threads"))
    base_dir, out_dir = args.pop("base"), args.pop("out")
    settings = train(base_dir, out_dir, MultitaskConfig(**args))
    print(json.dumps({key: value for key, value in settings.items() if key.startswith("held_out")}, indent=2))


if __name__ == "__main__":
    main()
