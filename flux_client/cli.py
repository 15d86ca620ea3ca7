"""`python -m flux_client generate|finetune|telegram|rerun`: the client side of the service, over its public HTTP API.

`flux-serve generate` and `flux-serve telegram` hand over to this command (exec, without importing it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flux_client import config
from flux_client.errors import FluxAPIError, FluxError
from flux_client.finetune import parse_finetune
from flux_client.options import parse_lora
from flux_client.progress import JobUpdate
from flux_client.protocol import DEFAULT_MODEL, MAX_INPUT_IMAGES, is_url
from flux_client.rerun_command import add_rerun_arguments, run_rerun

if TYPE_CHECKING:  # httpx and tqdm are imported by the command that uses them: --help answers at once
    from flux_client.client import FluxClient

FAILED = 1
BOT_EXTRA_MISSING = "the Telegram bot needs aiogram, which is not installed: pip install 'flux-serve[bot]'"


def lora_argument(text: str) -> tuple[str, float]:
    try:
        return parse_lora(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def finetune_argument(text: str) -> tuple[str, float | None]:
    try:
        return parse_finetune(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the API (default: ${config.URL_ENV}, else {config.DEFAULT_URL})")
    parser.add_argument("--key", help=f"API key (default: ${config.KEY_ENV}, else {config.local_key_file()})")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument("-n", "--num-images", type=int, default=1, help="images of this prompt, in one job")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the images (default: here)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"a variant of GET /v1/models (default {DEFAULT_MODEL})")
    parser.add_argument("--aspect-ratio", help="e.g. 16:9, over the model's default area")
    parser.add_argument("--steps", type=int, help="default: the model's")
    parser.add_argument("--seed", type=int, help="image i uses seed + i; default: drawn by the server")
    parser.add_argument(
        "--lora", action="append", type=lora_argument, default=[], metavar="ID[:SCALE]", help="repeatable"
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH|URL",
        help="an input image to edit (PNG, JPEG or WebP; a file is uploaded first); repeatable, up to 4",
    )
    parser.add_argument(
        "--finetune",
        type=finetune_argument,
        metavar="ID[:STRENGTH]",
        help="one of your finetunes (POST /v1/{model}-finetuned); STRENGTH 0..2, default: its measured best",
    )
    parser.add_argument(
        "--deadline", type=float, metavar="SECONDS", help="refused at once, saying what would fit, if the ETA is longer"
    )
    parser.add_argument(
        "--previews", type=Path, metavar="DIR", help="save the image as it forms, as DIR/<job>-step-<n>.jpg"
    )
    add_connection_arguments(parser)


class ProgressBar:
    """One tqdm bar per job: steps once the denoiser reports them, the queue position before."""

    def __init__(self, job_id: str):
        from tqdm import tqdm

        self.bar = tqdm(desc=f"job {job_id[:8]}", unit="step", file=sys.stderr, leave=True)

    def __call__(self, update: JobUpdate) -> None:
        if update.total:
            self.bar.total = update.total
            self.bar.n = update.step or 0
        self.bar.set_postfix_str(update.describe())

    def close(self) -> None:
        self.bar.close()


class PreviewSaver:
    """Each preview a job's progress brings, saved once as DIR/<job>-step-<n>.jpg; then the next callback."""

    def __init__(self, folder: Path, then):
        self.folder = folder
        self.then = then

    def __call__(self, update: JobUpdate) -> None:
        picture = update.preview_image()
        if picture is not None:
            step, data = picture
            path = self.folder / f"{update.job_id}-step-{step}.jpg"
            if not path.exists():
                path.write_bytes(data)
        self.then(update)


def input_images_problem(images: list[str]) -> str | None:
    """What is wrong with the --image values, found before contacting anything; None when nothing is."""
    if len(images) > MAX_INPUT_IMAGES:
        return f"at most {MAX_INPUT_IMAGES} --image per job; got {len(images)}."
    for image in images:
        if not is_url(image) and not Path(image).is_file():
            return f"--image {image}: no such file; give the path of a PNG, JPEG or WebP image, or an http(s) URL."
    return None


def uploaded(flux: FluxClient, images: list[str]) -> list[str]:
    """Each file uploaded (POST /v1/uploads: no inline base64, so large photos stay under the body limit) as its
    id; URLs as they are. A refusal names the file."""
    ids = []
    for image in images:
        if is_url(image):
            ids.append(image)
            continue
        try:
            ids.append(flux.upload(image))
        except FluxAPIError as error:
            raise FluxAPIError(error.status_code, f"--image {image}: {error.message}", error.retry_after_s) from None
    return ids


def run_generate(options: argparse.Namespace) -> int:
    """Submit, follow, download; print the files and the job id. Exit code 1 with the API's message on failure."""
    problem = input_images_problem(options.image)
    if problem:
        print(f"flux-serve generate: {problem}", file=sys.stderr)
        return FAILED
    from flux_client.client import FluxClient

    job_id = None
    try:
        if options.previews is not None:
            options.previews.mkdir(parents=True, exist_ok=True)
        with FluxClient(config.api_url(options.url), config.api_key(options.key)) as flux:
            submitted = flux.submit_job(
                options.prompt,
                options.model,
                num_images=options.num_images,
                aspect_ratio=options.aspect_ratio,
                steps=options.steps,
                seed=options.seed,
                loras=options.lora,
                images=uploaded(flux, options.image) or None,
                finetune=options.finetune[0] if options.finetune else None,
                finetune_strength=options.finetune[1] if options.finetune else None,
                deadline_s=options.deadline,
            )
            job_id = submitted["id"]
            if submitted.get("eta_s") is not None:
                print(f"job {job_id[:8]}: about {submitted['eta_s']:.0f} s", file=sys.stderr)
            bar = ProgressBar(job_id)
            on_progress = bar if options.previews is None else PreviewSaver(options.previews, bar)
            try:
                job = flux.wait(job_id, on_progress=on_progress)
            finally:
                bar.close()
            paths = flux.download(job, options.out)
    except (FluxError, TimeoutError, OSError) as error:
        where = f" (job {job_id})" if job_id and job_id not in str(error) else ""
        print(f"flux-serve generate: {error}{where}", file=sys.stderr)
        return FAILED
    for path in paths:
        print(path)
    print(f"job {job_id} (seed {job['seed']})")
    return 0


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="train on a folder of images and .txt captions (zipped, sent)")
    create.add_argument("folder", type=Path, help="images (JPEG, PNG, WebP), each with an optional a.txt caption")
    create.add_argument("--trigger", default="TOK", help="the word that calls the concept (default TOK)")
    create.add_argument(
        "--mode", default="style", choices=("general", "character", "style", "product", "edit"), help="default style"
    )
    create.add_argument("--iterations", type=int, help="training steps (10..2000); default: the model's")
    create.add_argument("--comment", help="a name for it (default: the folder's name)")
    create.add_argument("--model", help=f"the served model to use it with (default: the server's, {DEFAULT_MODEL})")
    create.add_argument("--wait", action="store_true", help="follow the training to its end")
    add_connection_arguments(create)
    add_connection_arguments(actions.add_parser("list", help="your finetunes' ids"))
    for action, what in (("show", "its details (JSON)"), ("delete", "stop it if it trains, then remove it")):
        command = actions.add_parser(action, help=what)
        command.add_argument("finetune_id", metavar="ID")
        add_connection_arguments(command)


class TrainingBar:
    """A tqdm bar of a training's percent done."""

    def __init__(self, finetune_id: str):
        from tqdm import tqdm

        self.bar = tqdm(desc=f"finetune {finetune_id[:8]}", unit="%", total=100, file=sys.stderr, leave=True)

    def __call__(self, update: JobUpdate) -> None:
        self.bar.n = update.step or 0
        self.bar.set_postfix_str(update.stage)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def finetune_create(flux: FluxClient, options: argparse.Namespace) -> None:
    finetune_id = flux.create_finetune(
        options.folder,
        options.comment or options.folder.resolve().name,
        mode=options.mode,
        trigger_word=options.trigger,
        iterations=options.iterations,
        model=options.model,
    )
    print(finetune_id)
    if not options.wait:
        return
    bar = TrainingBar(finetune_id)
    try:
        result = flux.wait_finetune(finetune_id, on_progress=bar)
    finally:
        bar.close()
    print(f"finetune {finetune_id} Ready (default strength {result.get('default_strength')})")


def run_finetune(options: argparse.Namespace) -> int:
    """create / list / show / delete; exit code 1 with the API's message on failure."""
    from flux_client.client import FluxClient

    try:
        with FluxClient(config.api_url(options.url), config.api_key(options.key)) as flux:
            if options.action == "create":
                finetune_create(flux, options)
            elif options.action == "list":
                for finetune_id in flux.my_finetunes():
                    print(finetune_id)
            elif options.action == "show":
                print(json.dumps(flux.finetune_details(options.finetune_id), indent=2))
            else:
                flux.delete_finetune(options.finetune_id)
                print(f"deleted {options.finetune_id}")
    except (FluxError, TimeoutError, OSError, ValueError) as error:
        print(f"flux-serve finetune {options.action}: {error}", file=sys.stderr)
        return FAILED
    return 0


def add_telegram_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--webhook-url",
        help="receive updates on this public HTTPS URL instead of long polling (env TELEGRAM_WEBHOOK_URL)",
    )
    parser.add_argument(
        "--webhook-listen",
        help="HOST:PORT the webhook server binds (env TELEGRAM_WEBHOOK_LISTEN; default 127.0.0.1:8081)",
    )


def run_telegram(options: argparse.Namespace) -> int:
    """Run the bot until interrupted; configured by env (see flux_client.bot_config)."""
    from flux_client.bot_config import BotConfig, ConfigError

    try:
        from flux_client.telegram_bot import run_bot
    except ModuleNotFoundError as error:
        if error.name != "aiogram" and not (error.name or "").startswith("aiogram."):
            raise
        print(f"flux-serve telegram: {BOT_EXTRA_MISSING}", file=sys.stderr)
        return FAILED
    try:
        bot_config = BotConfig.from_env(webhook_url=options.webhook_url, webhook_listen=options.webhook_listen)
    except ConfigError as error:
        print(f"flux-serve telegram: {error}", file=sys.stderr)
        return FAILED
    run_bot(bot_config)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flux_client", description="flux-serve's client commands")
    commands = parser.add_subparsers(dest="command", required=True)
    add_generate_arguments(commands.add_parser("generate", help="generate images and save them"))
    add_finetune_arguments(commands.add_parser("finetune", help="train, list, show and delete finetunes"))
    add_telegram_arguments(commands.add_parser("telegram", help="run the Telegram bot"))
    rerun = commands.add_parser("rerun", help="make a Ready job again; say whether its images are identical")
    add_rerun_arguments(rerun, add_connection_arguments)
    options = parser.parse_args(argv)
    if options.command == "rerun":
        return run_rerun(options, ProgressBar)
    run = {"generate": run_generate, "finetune": run_finetune, "telegram": run_telegram}[options.command]
    return run(options)
