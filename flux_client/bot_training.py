"""Fine-tuning from a chat, the parts without aiogram: /train's options, the photos a chat collects for a
training (held in the bot's memory, so capped in count and bytes, and dropped when left idle), and what a
training's status, end and the list of finetunes look like as text."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flux_client.bot_options import OptionError, split_options
from flux_client.progress import PENDING, READY

MODES = ("general", "character", "style", "product")  # `edit` needs before/after pairs: the API's, not a chat's
DEFAULT_MODE, DEFAULT_TRIGGER_WORD = "style", "TOK"  # as `flux-serve finetune create`
TRAIN_OPTIONS = ("--mode", "--trigger", "--iterations")
TRIGGER_WORD_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}\Z")  # what the service accepts
MIN_ITERATIONS, MAX_ITERATIONS = 10, 2000  # the service's bounds, checked before any photo is sent
MAX_NAME_CHARS = 200  # the service's finetune_comment
MAX_PHOTOS = 50  # the service's max_images by default
MAX_PHOTO_BYTES = 20 * 2**20  # what a bot may fetch through getFile, and the service's default per image
MAX_CHAT_BYTES = 60 * 2**20  # one chat's photos in the bot's memory
MAX_HELD_BYTES = 512 * 2**20  # every chat's photos together
COLLECTION_IDLE_S = 30 * 60.0  # photos collected with no new one for this long are dropped
MAX_SAMPLE_PHOTOS = 4  # sample images sent per training: the newest while it trains, and the last at its end
MEGABYTE = 2**20
SECONDS_SHOWN_UP_TO = 90  # a longer wait is said in minutes
USAGE = "Send 1-50 photos (more than 5 is better; albums are fine), then /done; /cancel stops."


@dataclass(frozen=True)
class TrainOptions:
    name: str | None = None  # None: the bot names it after the date
    mode: str = DEFAULT_MODE
    trigger_word: str = DEFAULT_TRIGGER_WORD
    iterations: int | None = None  # None: the model's default


def parse_train(text: str | None) -> TrainOptions:
    """'my cat --mode character --trigger CATTO --iterations 200': the words that are not options are the name."""
    settings = {}
    words, options = split_options(text or "", TRAIN_OPTIONS, f"/train takes {', '.join(TRAIN_OPTIONS)}")
    for option, value in options:
        if option == "--mode":
            if value not in MODES:
                raise OptionError(
                    f"--mode takes {', '.join(MODES)} (got {value or 'nothing'!r}), e.g. /train my cat --mode character"
                )
            settings["mode"] = value
        elif option == "--trigger":
            if not TRIGGER_WORD_SHAPE.match(value):
                raise OptionError(
                    f"--trigger takes one word of up to 32 letters, digits, _ or -, starting with a letter "
                    f"(got {value or 'nothing'!r}), e.g. --trigger TOK"
                )
            settings["trigger_word"] = value
        else:
            if not value.isdigit() or not MIN_ITERATIONS <= int(value) <= MAX_ITERATIONS:
                raise OptionError(
                    f"--iterations takes a whole number from {MIN_ITERATIONS} to {MAX_ITERATIONS} "
                    f"(got {value or 'nothing'!r}), e.g. --iterations 300"
                )
            settings["iterations"] = int(value)
    name = " ".join(words)
    if len(name) > MAX_NAME_CHARS:
        raise OptionError(f"That name has {len(name)} characters; keep it to {MAX_NAME_CHARS}.")
    return TrainOptions(name=name or None, **settings)


def image_suffix(data: bytes) -> str | None:
    """The file suffix the service trains on for these bytes (by their signature, whatever the file was called);
    None when they are not a JPEG, PNG or WebP image."""
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def megabytes(size_bytes: int) -> str:
    return f"{size_bytes / MEGABYTE:.1f} MB"


def photos_text(count: int) -> str:
    return f"{count} photo{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Photo:
    data: bytes
    suffix: str  # ".jpg", ".png" or ".webp"
    caption: str | None


@dataclass
class Collection:
    """One chat's photos for a training, until /done sends them."""

    options: TrainOptions
    name: str
    touched_at: float
    photos: list[Photo] = field(default_factory=list)
    submitting: bool = False  # /done is sending them: no more photos, no second /done
    caps_said: set[str] = field(default_factory=set)  # an album over a cap hears of it once

    @property
    def total_bytes(self) -> int:
        return sum(len(photo.data) for photo in self.photos)

    def files(self) -> dict[str, bytes]:
        """The upload: photo_01.jpg (with photo_01.txt, its caption, when it had one), ... in the order sent."""
        files = {}
        for number, photo in enumerate(self.photos, start=1):
            files[f"photo_{number:02d}{photo.suffix}"] = photo.data
            if photo.caption:
                files[f"photo_{number:02d}.txt"] = photo.caption.encode()
        return files


class CollectionRefused(ValueError):
    """A photo the collection cannot take; the message says why and what to do. `cap` names a cap that an
    album would hit photo after photo, so the chat hears of it once (None: say it every time)."""

    def __init__(self, message: str, cap: str | None = None):
        super().__init__(message)
        self.cap = cap


class Collections:
    """The chats' collections, in memory. A collection left without a new photo for idle_s is dropped (its name
    kept until the chat's next /done or /cancel, to say what happened)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        idle_s: float = COLLECTION_IDLE_S,
        max_photos: int = MAX_PHOTOS,
        max_photo_bytes: int = MAX_PHOTO_BYTES,
        max_chat_bytes: int = MAX_CHAT_BYTES,
        max_held_bytes: int = MAX_HELD_BYTES,
    ):
        self.clock, self.idle_s = clock, idle_s
        self.max_photos, self.max_photo_bytes = max_photos, max_photo_bytes
        self.max_chat_bytes, self.max_held_bytes = max_chat_bytes, max_held_bytes
        self._open: dict[int, Collection] = {}
        self._expired: dict[int, str] = {}

    def _drop_idle(self) -> None:
        now = self.clock()
        for chat_id, collection in list(self._open.items()):
            if not collection.submitting and now - collection.touched_at >= self.idle_s:
                self._expired[chat_id] = collection.name
                del self._open[chat_id]

    def open(self, chat_id: int) -> Collection | None:
        self._drop_idle()
        return self._open.get(chat_id)

    def start(self, chat_id: int, options: TrainOptions, name: str) -> Collection:
        self._drop_idle()
        self._expired.pop(chat_id, None)
        collection = self._open[chat_id] = Collection(options, name, self.clock())
        return collection

    def expired_name(self, chat_id: int) -> str | None:
        """The name of the chat's collection dropped for idleness, once (then forgotten)."""
        self._drop_idle()
        return self._expired.pop(chat_id, None)

    def check_room(self, chat_id: int, size_bytes: int) -> None:
        """CollectionRefused unless the chat's open collection can take a photo of size_bytes (0: unknown yet)."""
        collection = self.open(chat_id)
        if collection is None:
            raise CollectionRefused("No photos are being collected here any more; /train starts again.")
        if collection.submitting:
            raise CollectionRefused(
                f"The photos of \u201c{collection.name}\u201d are being sent to the service; this one is not part "
                "of them. Wait for its answer."
            )
        if size_bytes > self.max_photo_bytes:
            raise CollectionRefused(
                f"That file is {megabytes(size_bytes)}; each photo may be up to {megabytes(self.max_photo_bytes)}. "
                "Send it as a photo (Telegram makes it smaller) or shrink it."
            )
        if len(collection.photos) >= self.max_photos:
            raise CollectionRefused(
                f"\u201c{collection.name}\u201d already has {self.max_photos} photos, the most a training takes; "
                "I left out the rest. Send /done to train on these, or /cancel.",
                cap="photos",
            )
        if collection.total_bytes + size_bytes > self.max_chat_bytes:
            raise CollectionRefused(
                f"The photos for \u201c{collection.name}\u201d would pass {megabytes(self.max_chat_bytes)} together "
                f"(now {megabytes(collection.total_bytes)}), so I left out the rest. Send /done to train on these, "
                "or send smaller photos.",
                cap="bytes",
            )
        held = sum(other.total_bytes for other in self._open.values())
        if held + size_bytes > self.max_held_bytes:
            raise CollectionRefused(
                "I am holding too many photos for trainings right now, so I left this one out. Send /done to train "
                "on the photos you sent, or try again later.",
                cap="held",
            )

    def add(self, chat_id: int, photo: Photo) -> int:
        """Keep the photo (CollectionRefused when a cap says no); the number of photos collected."""
        self.check_room(chat_id, len(photo.data))
        collection = self._open[chat_id]
        collection.photos.append(photo)
        collection.touched_at = self.clock()
        return len(collection.photos)

    def close(self, chat_id: int) -> Collection | None:
        """Forget the chat's collection (sent, or cancelled)."""
        return self._open.pop(chat_id, None)


# -- what the chat reads --------------------------------------------------------------------------------


def settings_text(options: TrainOptions) -> str:
    iterations = f", {options.iterations} iterations" if options.iterations else ""
    return f"mode {options.mode}, trigger word {options.trigger_word}{iterations}"


def started_text(collection: Collection) -> str:
    return (
        f"Collecting photos for \u201c{collection.name}\u201d ({settings_text(collection.options)}).\n{USAGE}\n"
        "A photo's caption becomes its caption in the training (write the trigger word in it); without one, "
        "the service writes one."
    )


def already_collecting_text(collection: Collection) -> str:
    return (
        f"This chat is already collecting photos for \u201c{collection.name}\u201d ({len(collection.photos)} so "
        "far): send more, /done to train on them, or /cancel to drop them before a new /train."
    )


def collected_text(collection: Collection) -> str:
    return (
        f"{photos_text(len(collection.photos))} for \u201c{collection.name}\u201d "
        f"({megabytes(collection.total_bytes)}). Send more, or /done to start training; /cancel drops them."
    )


def nothing_to_train_text(expired_name: str | None, idle_s: float = COLLECTION_IDLE_S) -> str:
    if expired_name:
        return (
            f"The photos for \u201c{expired_name}\u201d were dropped after {idle_s / 60:g} minutes without a new "
            "one. /train starts again."
        )
    return f"Nothing to train yet: /train [name] starts collecting photos. {USAGE}"


def time_left(eta_s: float | None) -> str:
    if eta_s is None:
        return ""
    if eta_s <= SECONDS_SHOWN_UP_TO:
        return f", about {max(1, round(eta_s))} s left"
    return f", about {round(eta_s / 60)} min left"


def training_status_text(name: str, finetune_id: str, details: dict) -> str:
    """The status message's text: where the training is, and how to stop it."""
    progress = details.get("progress") or {}
    status = details["status"]
    if status != PENDING:
        where = status
    elif progress.get("total"):
        where = f"step {progress['step']} of {progress['total']}{time_left(progress.get('eta_s'))}"
    else:
        where = "waiting for a trainer\u2026"
    stop = f"\n/forget {finetune_id} stops and deletes it." if status == PENDING else ""
    return f"Training \u201c{name}\u201d ({photos_text(details.get('images') or 0)}): {where}{stop}"


def outcome_text(name: str, finetune_id: str, details: dict) -> str:
    """The message at a training's end: on Ready how to use it, otherwise why it ended."""
    if details["status"] == READY:
        trigger = details.get("trigger_word") or DEFAULT_TRIGGER_WORD
        strength = details.get("default_strength")
        default = f" (its default strength is {strength:g})" if strength is not None else ""
        return (
            f"\u201c{name}\u201d is Ready. Use it with its trigger word {trigger}:\n"
            f"/gen a photo of {trigger} --finetune {finetune_id}\n"
            f"(or --finetune last, this chat's last finetune). A strength from 0 to 2 goes after a colon, "
            f"e.g. --finetune {finetune_id}:1.2{default}. /finetunes lists yours."
        )
    reason = details.get("error") or "no reason given"
    return f"Training \u201c{name}\u201d ended {details['status']}: {reason}. /train starts a new one."


def sample_caption(name: str, sample_name: str, details: dict) -> str:
    """'…/samples/00004.png' of a 12-step training -> 'Sample of “name” at step 4 of 12'."""
    step = sample_name.split(".", 1)[0]
    total = details.get("iterations")
    if not step.isdigit():
        return f"Sample of \u201c{name}\u201d"
    return f"Sample of \u201c{name}\u201d at step {int(step)}" + (f" of {total}" if total else "")


def finetunes_text(finetunes: list[dict]) -> str:
    """/finetunes: each with its name, status, trigger word and id."""
    if not finetunes:
        return "No finetunes yet: /train [name] starts one."
    lines = [f"Your finetunes ({len(finetunes)}):"]
    for details in finetunes:
        lines.append(
            f"\u2022 {details.get('finetune_comment') or 'unnamed'}: {details['status']}, trigger word "
            f"{details.get('trigger_word') or DEFAULT_TRIGGER_WORD}\n  {details['finetune_id']}"
        )
    lines.append("Use one with /gen ... --finetune ID; /forget ID deletes one.")
    return "\n".join(lines)
