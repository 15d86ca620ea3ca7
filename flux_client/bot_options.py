"""What a chat asks for: `/gen` text with inline options, the chat's settings, a past job to repeat."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from flux_client.finetune import parse_finetune
from flux_client.options import parse_lora
from flux_client.protocol import DEFAULT_MODEL

MORE_IMAGES = 4  # "Same seed, 4 more"
DASHES = ("\u2014", "\u2013")  # phones turn "--" into an em or en dash
OPTIONS = ("--n", "--ar", "--model", "--seed", "--lora", "--finetune")
LAST_FINETUNE = "last"  # --finetune last: the chat's last finetune that ended Ready
EXAMPLES = {"--n": "4", "--ar": "16:9", "--model": "9b", "--seed": "7", "--lora": "mystyle:0.8", "--finetune": "ID:1.2"}


class OptionError(ValueError):
    """A /gen option the bot cannot read; the message shows the right form."""


@dataclass
class ChatSettings:
    """Per-chat defaults from the settings menu. Kept in memory: a bot restart forgets them."""

    model: str = DEFAULT_MODEL
    aspect_ratio: str | None = None  # None: the model's default size
    num_images: int = 1
    last_finetune: str | None = None  # the last finetune trained in this chat that ended Ready: --finetune last


@dataclass
class Submission:
    """One job to submit, with everything the API needs."""

    prompt: str
    model: str = DEFAULT_MODEL
    num_images: int = 1
    aspect_ratio: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    seed: int | None = None
    loras: list[tuple[str, float]] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)  # photos to edit, sent as input_image .. input_image_4
    finetune: str | None = None  # one of the key's finetunes: POST /v1/{model}-finetuned
    finetune_strength: float | None = None  # None: the finetune's measured default

    def fields(self) -> dict:
        """Keyword arguments of AsyncFluxClient.submit besides prompt and model."""
        return {
            "num_images": self.num_images,
            "aspect_ratio": self.aspect_ratio,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "seed": self.seed,
            "loras": self.loras,
            "images": self.images or None,
            "output_format": "jpeg",  # Telegram photos
            "finetune": self.finetune,
            "finetune_strength": self.finetune_strength,
        }


def _whole_number(option: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise OptionError(f"{option} needs a whole number, e.g. {option} 4 (got {value!r}).") from None


def _set_finetune(submission: Submission, value: str, settings: ChatSettings) -> None:
    """ID, ID:STRENGTH, or `last` (last:STRENGTH): the chat's last finetune that ended Ready."""
    if submission.finetune is not None:
        raise OptionError(
            "Give --finetune once; to add another finetune, write it as --lora ID:SCALE (a finetune's id works there)."
        )
    try:
        submission.finetune, submission.finetune_strength = parse_finetune(value)
    except ValueError as error:
        raise OptionError(str(error)) from None
    if submission.finetune == LAST_FINETUNE:
        if settings.last_finetune is None:
            raise OptionError(
                "No finetune trained in this chat has finished yet; give one's id (/finetunes lists them), "
                "or /train one."
            )
        submission.finetune = settings.last_finetune


def split_options(text: str, known: tuple[str, ...], usage: str) -> tuple[list[str], list[tuple[str, str]]]:
    """'a fox --n 4 --ar=16:9' -> (['a', 'fox'], [('--n', '4'), ('--ar', '16:9')]): the words that are not options,
    and each option with its value ('' when none follows). A phone's dash for '--' counts; an unknown option is
    an OptionError ending with `usage`."""
    words, options, tokens = [], [], iter(text.split())
    for token in tokens:
        if token.startswith(DASHES):
            token = "--" + token.lstrip("".join(DASHES))  # phones turn "--" into a dash
        if not token.startswith("--") or token == "--":
            words.append(token)
            continue
        option, _, value = token.partition("=")
        if option not in known:
            raise OptionError(f"Unknown option {option}; {usage}.")
        options.append((option, value or next(tokens, "")))
    return words, options


def parse_prompt(text: str, settings: ChatSettings) -> Submission:
    """'a fox --n 4 --ar 16:9 --model 9b --seed 7 --lora mystyle:0.8 --finetune ID:1.2' over the chat's settings.

    Options may come anywhere; every other word is the prompt. --lora repeats; --finetune comes once (its route
    takes one finetune; more adapters go as --lora ID:SCALE, a finetune's id works there too).
    """
    submission = Submission(
        prompt="", model=settings.model, num_images=settings.num_images, aspect_ratio=settings.aspect_ratio
    )
    words, options = split_options(text, OPTIONS, f"use {', '.join(OPTIONS)}")
    for option, value in options:
        if not value:
            raise OptionError(f"{option} needs a value, e.g. {option} {EXAMPLES[option]}.")
        if option == "--n":
            submission.num_images = _whole_number(option, value)
        elif option == "--ar":
            submission.aspect_ratio = value
        elif option == "--model":
            submission.model = value
        elif option == "--seed":
            submission.seed = _whole_number(option, value)
        elif option == "--finetune":
            _set_finetune(submission, value, settings)
        else:
            try:
                submission.loras.append(parse_lora(value))
            except ValueError as error:
                raise OptionError(str(error)) from None
    submission.prompt = " ".join(words)
    if not submission.prompt:
        raise OptionError("Write a prompt too, e.g. /gen a red circle on a blue background --n 4")
    return submission


def resolve_model(name: str, served: list[str]) -> str:
    """'9b' -> 'flux-2-klein-9b' when exactly one served model ends with it; unknown names pass to the API."""
    if name in served or not served:
        return name
    matches = [model for model in served if model.endswith("-" + name)]
    return matches[0] if len(matches) == 1 else name


def repeat_job(job: dict, *, same_seed: bool) -> Submission:
    """A past job again: 'Again' draws a new seed; 'Same seed, 4 more' takes the next 4 seeds of its series.

    (Image i of a job uses seed + i, so the 4 more continue after the album's last seed: new images, same series.)
    """
    request = job["request"]
    return Submission(
        prompt=request["prompt"],
        model=job["model"],
        num_images=MORE_IMAGES if same_seed else request["num_images"],
        width=request["width"],
        height=request["height"],
        steps=request["steps"],
        seed=job["seed"] + request["num_images"] if same_seed else None,
        loras=[(lora["id"], lora["scale"]) for lora in request.get("loras", [])],
    )


def with_model(submission: Submission, served: list[str]) -> Submission:
    return replace(submission, model=resolve_model(submission.model, served))
