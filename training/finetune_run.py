"""One finetune, set up and stepped: what `FinetuneWorker.train` drives.

Setting up loads the base pipeline, decodes, captions and encodes the examples once (and, under prior
preservation, the class images the base draws first), adds the LoRA and builds the optimizer and schedule. A
step draws its batch, caption dropout and noise from one seeded generator, so a checkpoint (training/
finetune_checkpoint.py) that holds the generator's state resumes the very run it came from. Finishing writes the
adapter file, loads it into the served model's pipeline as the denoiser does, and sweeps its strength there.
"""

from __future__ import annotations

import gc
import random
import tempfile
import time
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict

from deployments.finetune import MODES, FinetuneEvent, FinetuneExample, FinetuneParams, check_choice, is_offline_model
from deployments.loading import load_pipeline, pick_dtype, resolve_weights
from deployments.registry import get_variant
from lora.adapter_file import write_metadata
from training import finetune_checkpoint
from training.dataset import DatasetError
from training.finetune_data import decode_image, square, to_pixels, write_captions
from training.finetune_lora import TARGET_MODULES, adapted_modules, add_lora, make_optimizer, write_adapter
from training.finetune_recipe import recipe_for
from training.finetune_sampling import SampleSettings, draw_images, encode_prompts, png_bytes
from training.finetune_strength import FlowLossJudge, ShapesConceptJudge, sweep
from training.flow_matching import (
    flow_matching_loss,
    images_to_tokens,
    sample_noise_levels,
    shift_noise_levels,
    token_ids,
)
from training.loop import optimizer_step, warmup_cosine_schedule
from training.shapes_multitask import reference_ids
from training.shapes_world import COLOURS, read_image

TOKEN_PX = 16  # one latent token per 16x16 pixels: 8x VAE, 2x2 patches
ADAPTER_NAME = "finetune"


def check_request(params: FinetuneParams, examples: list[FinetuneExample]) -> None:
    check_choice("mode", params.mode, MODES)
    if not examples:
        raise DatasetError("a finetune needs at least one image; send 1-20 (more than 5 train better).")
    if params.iterations < 1 or params.rank < 1:
        raise ValueError(f"iterations and lora_rank must be 1 or more (got {params.iterations}, {params.rank}).")
    missing = [example.name for example in examples if (example.target_png is None) == (params.mode == "edit")]
    if missing and params.mode == "edit":
        raise DatasetError(f"edit mode trains on pairs: {', '.join(missing)} has no target image.")
    if missing:
        raise DatasetError(f"{', '.join(missing)} has a target image, which only mode 'edit' uses; send it there.")


class FinetuneRun:
    def __init__(self, params: FinetuneParams, examples: list[FinetuneExample], device: torch.device):
        check_request(params, examples)
        started = time.perf_counter()
        self.params, self.device, self.edits = params, device, params.mode == "edit"
        self.weights = resolve_weights(get_variant(params.base_variant), params.weights)
        self.dtype = pick_dtype(device)
        self.pipeline = load_pipeline(self.weights, device, self.dtype)
        self.recipe = recipe_for(params, self.weights)
        self.settings = SampleSettings.of(self.weights, self.recipe.side_px, self.edits)
        self.timings_s = {"load": round(time.perf_counter() - started, 2)}
        started = time.perf_counter()
        self._cache_examples(examples)
        self._cache_prior()
        self.timings_s["cache"] = round(time.perf_counter() - started, 2)
        if device.type == "cuda":
            self.pipeline.text_encoder.to("cpu")  # every prompt is encoded: the card holds the transformer alone
            self.pipeline.transformer.enable_gradient_checkpointing()
        self.transformer = self.pipeline.transformer
        self.parameters = add_lora(self.transformer, params.rank, TARGET_MODULES)
        self.optimizer = make_optimizer(self.parameters, params.learning_rate, device)
        self.optimizer_name = type(self.optimizer).__name__
        warmup = max(1, round(params.iterations * self.recipe.warmup_share))
        self.schedule = warmup_cosine_schedule(self.optimizer, params.iterations, warmup)
        self.generator = torch.Generator().manual_seed(params.seed)
        self.samples_drawn, self.resumed_from, self.train_s = 0, None, 0.0

    # -- setup ------------------------------------------------------------------------

    @torch.no_grad()
    def _cache_examples(self, examples: list[FinetuneExample]) -> None:
        side = self.recipe.side_px
        self.images = [square(decode_image(example.image_png, example.name), side) for example in examples]
        targets = [square(decode_image(e.target_png, e.name), side) for e in examples] if self.edits else self.images
        self.captions = write_captions(self.params, examples, self.images)
        self.targets = self._tokens(targets)
        self.references = self._tokens(self.images) if self.edits else None
        self.prompt_embeds = encode_prompts(self.pipeline, self.settings, self.captions.texts, self.device)
        self.empty_embeds = encode_prompts(self.pipeline, self.settings, [""], self.device)
        self.sample_prompts = list(self.params.sample_prompts) or self._default_sample_prompts()
        self.sample_embeds = encode_prompts(self.pipeline, self.settings, self.sample_prompts, self.device)

    def _tokens(self, images) -> torch.Tensor:
        pixels = to_pixels(images).to(self.device, self.pipeline.vae.dtype)
        return images_to_tokens(self.pipeline.vae, pixels)

    def _default_sample_prompts(self) -> list[str]:
        """The offline world: two colour pairs the captions never named (does the concept travel?); elsewhere
        the first two captions."""
        if not (is_offline_model(self.params.weights) and not self.edits):
            return self.captions.texts[:2]
        trained = {(reading.colour, reading.background) for reading in map(read_image, self.images)}
        unseen = [(c, b) for c in COLOURS for b in COLOURS if c != b and (c, b) not in trained]
        pairs = random.Random(self.params.seed).sample(unseen, 2)
        return [f"a {colour} {self.params.trigger_word} on a {background} background" for colour, background in pairs]

    @torch.no_grad()
    def _cache_prior(self) -> None:
        """DreamBooth's class images, drawn by the base itself before the adapter exists (and its unconditional
        images, the empty prompt's, which classifier-free guidance steers from)."""
        prompts = self.recipe.prior_prompts(self.captions.texts, self.params.trigger_word, self.params.seed)
        unconditional = self.recipe.unconditional_prior_images
        self.prior_targets = self.prior_embeds = None
        if not prompts and not unconditional:
            return
        embeds = (
            encode_prompts(self.pipeline, self.settings, prompts, self.device) if prompts else self.empty_embeds[:0]
        )
        images = []
        for start in range(0, len(prompts), 16):
            chunk = embeds[start : start + 16]
            images += draw_images(self.pipeline, self.settings, chunk, self.empty_embeds, 1, self.params.seed + start)
        if unconditional:
            images += draw_images(
                self.pipeline, self.settings, self.empty_embeds, self.empty_embeds, unconditional, self.params.seed
            )
            embeds = torch.cat([embeds, self.empty_embeds.expand(unconditional, -1, -1)])
        self.prior_targets, self.prior_embeds = self._tokens(images), embeds

    # -- steps ------------------------------------------------------------------------

    def _loss(self, targets, embeds, references=None, sample_weights=None) -> torch.Tensor:
        count, side_tokens = targets.shape[0], self.recipe.side_px // TOKEN_PX
        image_ids, text_ids = token_ids(count, side_tokens, side_tokens, embeds.shape[1])
        noise_levels = shift_noise_levels(
            sample_noise_levels(count, self.generator),
            self.pipeline.scheduler.config,
            targets.shape[1],
            self.settings.steps,
        )
        conditioning = {}
        if references is not None:
            conditioning = {
                "reference_tokens": references,
                "reference_ids": reference_ids(count, side_tokens, side_tokens).to(self.device),
            }
        return flow_matching_loss(
            self.transformer,
            targets.to(self.dtype),
            embeds.to(self.dtype),
            image_ids.to(self.device),
            text_ids.to(self.device),
            self.generator,
            noise_levels=noise_levels,
            sample_weights=sample_weights,
            **conditioning,
        )

    def train_step(self, step: int) -> float:
        """One optimizer step on a batch of training items and, under prior preservation, as many class images
        at `prior_weight`, in one forward pass."""
        started = time.perf_counter()
        self.transformer.train()
        batch, generator = self.recipe.batch_size, self.generator
        rows = torch.randint(len(self.captions.texts), (batch,), generator=generator).to(self.device)
        targets, embeds = self.targets[rows], self.prompt_embeds[rows]
        if self.prior_targets is None:
            references = self.references[rows] if self.references is not None else None
            loss = self._loss(targets, embeds, references)
        else:
            prior_rows = torch.randint(len(self.prior_targets), (batch,), generator=generator).to(self.device)
            weights = torch.tensor([1.0] * batch + [self.recipe.prior_weight] * batch)
            targets = torch.cat([targets, self.prior_targets[prior_rows]])
            loss = self._loss(targets, torch.cat([embeds, self.prior_embeds[prior_rows]]), sample_weights=weights)
        value = optimizer_step(self.optimizer, loss, clip_parameters=self.parameters)
        self.schedule.step()
        self.train_s += time.perf_counter() - started
        return value

    def sample(self, step: int) -> tuple[bytes, str]:
        """A sample from the training pipeline, the adapter at strength 1: the next sample prompt at the run's seed."""
        index = self.samples_drawn % len(self.sample_prompts)
        self.samples_drawn += 1
        self.transformer.eval()
        image = self._draw(self.pipeline, self.sample_embeds[index : index + 1])
        return png_bytes(image), self.sample_prompts[index]

    def _draw(self, pipeline, embeds):
        reference = self.images[0] if self.edits else None
        return draw_images(pipeline, self.settings, embeds, self.empty_embeds, 1, self.params.seed, reference)[0]

    def checkpoint(self, step: int) -> bytes:
        return finetune_checkpoint.pack(
            self.params,
            finetune_checkpoint.TrainingState(
                step=step,
                lora=get_peft_model_state_dict(self.transformer),
                optimizer=self.optimizer.state_dict(),
                schedule=self.schedule.state_dict(),
                noise_generator=self.generator.get_state(),
            ),
        )

    def restore(self, data: bytes) -> int:
        """The checkpoint's adapter, optimizer, schedule and generator; the step to continue from."""
        state = finetune_checkpoint.unpack(self.params, data)
        set_peft_model_state_dict(self.transformer, state.lora)
        self.optimizer.load_state_dict(state.optimizer)
        self.schedule.load_state_dict(state.schedule)
        self.generator.set_state(state.noise_generator)
        self.resumed_from = state.step
        return state.step

    # -- the end ----------------------------------------------------------------------

    def finish(self, started: float, loss: float | None) -> FinetuneEvent:
        """Adapter file, strength sweep on the served model, a sample at the chosen strength, details."""
        params = self.params
        served = get_variant(params.model)
        lora_layers = {
            name: t.detach().to("cpu", self.dtype) for name, t in get_peft_model_state_dict(self.transformer).items()
        }
        modules = adapted_modules(self.transformer)
        metadata = {
            "base_model": served.name,
            "base_model_repo": served.source,
            "trigger_word": params.trigger_word,
            "license": served.license,
            "tags": [params.mode, "finetune"],
            "rank": params.rank,
            "finetune_id": params.finetune_id,
            "trained_on": {"variant": params.base_variant, "weights": self.weights.description},
        }
        judge = self._judge()
        self.pipeline = self.transformer = self.optimizer = None  # the served model takes its place on the device
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        sweep_started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="flux-serve-finetune-") as folder:
            file = write_adapter(Path(folder), lora_layers, metadata)
            pipeline = load_pipeline(
                resolve_weights(served, params.served_weights or params.weights), self.device, self.dtype
            )
            pipeline.load_lora_weights(str(file), adapter_name=ADAPTER_NAME)
            choice = sweep(pipeline, ADAPTER_NAME, judge)
            sample = self._draw(pipeline, self.sample_embeds[:1])
            write_metadata(file, {**metadata, "default_strength": choice.strength})
            adapter = file.read_bytes()
        self.timings_s.update(
            train=round(self.train_s, 2),
            seconds_per_step=round(self.train_s / max(1, params.iterations - (self.resumed_from or 0)), 4),
            strength_sweep=round(time.perf_counter() - sweep_started, 2),
            total=round(time.perf_counter() - started, 2),
        )
        details = {
            "base_variant": params.base_variant,
            "trained_on_weights": self.weights.description,
            "served_model": served.name,
            "finetune_type": params.finetune_type,
            "rank": params.rank,
            "target_modules": TARGET_MODULES,
            "adapted_modules": len(modules),
            "iterations": params.iterations,
            "resumed_from_step": self.resumed_from,
            "learning_rate": params.learning_rate,
            "schedule": f"linear warmup over {self.recipe.warmup_share:.0%} of the steps, then cosine to 5 %",
            "optimizer": self.optimizer_name,
            "device": self.device.type,
            "dtype": str(self.dtype).removeprefix("torch."),
            "gradient_checkpointing": self.device.type == "cuda",
            "resolution_px": self.recipe.side_px,
            "batch_size": self.recipe.batch_size,
            "prior_images": self.recipe.prior_images,
            "prior_weight": self.recipe.prior_weight,
            "caption_source": self.captions.source,
            "captions": self.captions.texts,
            "final_loss": loss,
            "strength_sweep": {str(strength): score for strength, score in choice.scores.items()},
            "strength_criterion": choice.criterion,
            "timings_s": self.timings_s,
        }
        return FinetuneEvent(
            params.iterations,
            params.iterations,
            loss,
            png_bytes(sample),
            self.sample_prompts[0],
            adapter=adapter,
            default_strength=choice.strength,
            details=details,
        )

    def _judge(self):
        if is_offline_model(self.params.weights) and not self.edits:
            return ShapesConceptJudge(self.images, self.params.trigger_word, self.settings, self.device)
        references = None
        if self.references is not None:
            side_tokens = self.recipe.side_px // TOKEN_PX
            references = (self.references, reference_ids(len(self.images), side_tokens, side_tokens).to(self.device))
        return FlowLossJudge(self.targets, self.prompt_embeds, self.recipe.side_px // TOKEN_PX, references)
