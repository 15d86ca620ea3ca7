"""Fine-tuning from a chat (aiogram's side): /train collects photos, /done sends them as a finetune and follows
its training in one status message (edited at most every training_status_interval_s), with a few sample
photos and, at its end, how to use it; /finetunes lists the key's finetunes and /forget deletes one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime

from aiogram.exceptions import TelegramAPIError
from aiogram.filters import CommandObject
from aiogram.types import BufferedInputFile, CallbackQuery, Message

from flux_client.bot_jobs import JobRunner, StatusMessage, message_of
from flux_client.bot_options import ChatSettings, OptionError
from flux_client.bot_training import (
    MAX_SAMPLE_PHOTOS,
    CollectionRefused,
    Collections,
    Photo,
    already_collecting_text,
    collected_text,
    finetunes_text,
    image_suffix,
    nothing_to_train_text,
    outcome_text,
    parse_train,
    photos_text,
    sample_caption,
    started_text,
    training_status_text,
)
from flux_client.errors import FluxAPIError, FluxError
from flux_client.finetune import IMAGE_SUFFIXES
from flux_client.progress import PENDING, READY
from flux_client.protocol import image_name

log = logging.getLogger(__name__)
NOT_FOUND = 404
SERVER_ERROR = 500


class TrainingChat:
    """The training commands of every chat, and the trainings being followed."""

    def __init__(self, runner: JobRunner, settings: Mapping[int, ChatSettings], clock=time.monotonic):
        self.bot, self.flux, self.config, self.say = runner.bot, runner.flux, runner.config, runner.say
        self.settings, self.clock = settings, clock
        self.collections = Collections(clock=clock)
        self.following: defaultdict[int, dict[str, str]] = defaultdict(dict)  # chat -> {finetune id: its name}

    def collecting(self, message: Message) -> bool:
        """The filter in front of the photo handlers: while a chat collects, its photos are training data."""
        return self.collections.open(message.chat.id) is not None

    def takes_photo(self, event: Message | CallbackQuery) -> bool:
        """A photo or file for a collection with room: the flood gate lets these through uncounted (the collection
        caps them itself); once it is full, they count like any message."""
        if not isinstance(event, Message) or not (event.photo or event.document):
            return False
        collection = self.collections.open(event.chat.id)
        return collection is not None and len(collection.photos) < self.collections.max_photos

    async def train(self, message: Message, command: CommandObject) -> None:
        chat_id = message.chat.id
        collection = self.collections.open(chat_id)
        if collection is not None:
            await message.answer(already_collecting_text(collection))
            return
        try:
            options = parse_train(command.args)
        except OptionError as error:
            await message.answer(str(error))
            return
        name = options.name or f"Telegram photos {datetime.now():%Y-%m-%d %H:%M}"
        await message.answer(started_text(self.collections.start(chat_id, options, name)))

    async def add_photo(self, message: Message) -> None:
        """A photo (its largest size) or an image file, fetched from Telegram and kept; an album's photos arrive
        one message each, so the count is said once, album_wait_s after the last of them."""
        chat_id = message.chat.id
        if message.photo:
            item, what = message.photo[-1], "the photo"
        else:
            item, file_name = message.document, message.document.file_name or ""
            what = f"the file {file_name}".strip()
            suffix = "." + file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
            if not (item.mime_type or "").startswith("image/") and suffix not in IMAGE_SUFFIXES:
                await message.answer(f"I left out {what}: it is not an image. Send JPEG, PNG or WebP photos.")
                return
        try:
            self.collections.check_room(chat_id, item.file_size or 0)
            data = (await self.bot.download(item)).read()
        except CollectionRefused as refused:
            await self._say_refusal(message, refused)
            return
        except TelegramAPIError as error:
            await message.answer(f"I could not fetch {what} from Telegram ({error}); send it again.")
            return
        suffix = image_suffix(data)
        if suffix is None:
            await message.answer(f"I left out {what}: it is not a JPEG, PNG or WebP image.")
            return
        try:
            count = self.collections.add(chat_id, Photo(data, suffix, message.caption))
        except CollectionRefused as refused:
            await self._say_refusal(message, refused)
            return
        await asyncio.sleep(self.config.album_wait_s)
        collection = self.collections.open(chat_id)
        if collection is not None and not collection.submitting and len(collection.photos) == count:
            await message.answer(collected_text(collection))

    async def _say_refusal(self, message: Message, refused: CollectionRefused) -> None:
        collection = self.collections.open(message.chat.id)
        if refused.cap and collection is not None:
            if refused.cap in collection.caps_said:
                return
            collection.caps_said.add(refused.cap)
        await message.answer(str(refused))

    async def done(self, message: Message) -> None:
        """Send the photos as a finetune; on a refusal they stay, so /done can be tried again."""
        chat_id = message.chat.id
        collection = self.collections.open(chat_id)
        if collection is None:
            await message.answer(nothing_to_train_text(self.collections.expired_name(chat_id), self.collections.idle_s))
            return
        if collection.submitting:
            await message.answer(f"The photos of \u201c{collection.name}\u201d are being sent already.")
            return
        if not collection.photos:
            await message.answer(
                f"No photos yet for \u201c{collection.name}\u201d: send 1-50 photos first, then /done (or /cancel)."
            )
            return
        collection.submitting = True  # before any await: a second /done, or a late photo, is told so
        count = photos_text(len(collection.photos))
        status_id = await self.say(chat_id, f"Sending {count} for \u201c{collection.name}\u201d\u2026")
        if status_id is None:
            collection.submitting = False
            return
        status = StatusMessage(self.bot, chat_id, status_id, self.config.training_status_interval_s, self.clock)
        options = collection.options
        try:
            finetune_id = await self.flux.create_finetune_from_bytes(
                collection.files(),
                collection.name,
                mode=options.mode,
                trigger_word=options.trigger_word,
                iterations=options.iterations,
                model=self.settings[chat_id].model,
            )
        except FluxError as error:
            collection.submitting, collection.touched_at = False, self.clock()
            if isinstance(error, FluxAPIError):
                said = f"The service refused the training: {error.message}"
            else:
                said = "The image service is not reachable right now."
            await status.show(f"{said}\nI keep the {count}: /done tries again, /cancel drops them.", force=True)
            return
        self.collections.close(chat_id)
        self.following[chat_id][finetune_id] = collection.name
        try:
            await self.follow(chat_id, status, finetune_id, collection.name)
        finally:
            self.following[chat_id].pop(finetune_id, None)

    async def follow(self, chat_id: int, status: StatusMessage, finetune_id: str, name: str) -> None:
        """Poll finetune_details until the training ends, riding out short outages of the service."""
        deadline_s = self.clock() + self.config.training_timeout_s
        unreachable_since_s = None
        samples_sent: list[str] = []
        while True:
            try:
                details = await self.flux.finetune_details(finetune_id)
            except FluxAPIError as error:
                if error.status_code == NOT_FOUND:
                    await status.show(f"Training \u201c{name}\u201d was stopped and deleted.", force=True)
                    return
                if error.status_code < SERVER_ERROR:
                    await status.show(f"The service refused to show the training: {error.message}", force=True)
                    return
                details = None
            except FluxError:
                details = None
            if details is None:
                unreachable_since_s = unreachable_since_s or self.clock()
                if self.clock() - unreachable_since_s > self.config.training_unreachable_s:
                    await status.show(
                        f"Lost contact with the service while \u201c{name}\u201d trains; it goes on there: "
                        "/finetunes shows how it ends.",
                        force=True,
                    )
                    return
            else:
                unreachable_since_s = None
                ended = details["status"] != PENDING
                await status.show(training_status_text(name, finetune_id, details), force=ended)
                await self._send_sample(chat_id, name, details, samples_sent, last=ended)
                if ended:
                    if details["status"] == READY:
                        self.settings[chat_id].last_finetune = finetune_id
                    await self.say(chat_id, outcome_text(name, finetune_id, details))
                    return
            if self.clock() >= deadline_s:
                await status.show(
                    f"\u201c{name}\u201d still trains after {self.config.training_timeout_s:g} s; I stopped "
                    "following it: /finetunes shows how it ends.",
                    force=True,
                )
                return
            await asyncio.sleep(self.config.training_poll_interval_s)

    async def _send_sample(self, chat_id: int, name: str, details: dict, sent: list[str], last: bool) -> None:
        """The newest sample when it is new: MAX_SAMPLE_PHOTOS - 1 while training, the last slot for its end."""
        samples = details.get("samples") or []
        room = MAX_SAMPLE_PHOTOS - len(sent) - (0 if last else 1)
        if not samples or image_name(samples[-1]) in sent or room <= 0:
            return
        sample = image_name(samples[-1])
        try:
            [png] = await self.flux.image_bytes({"images": [samples[-1]]})  # a signed URL, as a job's images
            await self.bot.send_photo(
                chat_id,
                BufferedInputFile(png, filename=f"sample-{sample}"),
                caption=sample_caption(name, sample, details),
            )
        except (FluxError, TelegramAPIError) as error:
            log.warning("sample %s of a training not sent to chat %s: %s", sample, chat_id, error)
        sent.append(sample)

    async def cancel(self, message: Message) -> None:
        chat_id = message.chat.id
        collection = self.collections.open(chat_id)
        if collection is not None and collection.submitting:
            await message.answer(
                f"The photos of \u201c{collection.name}\u201d are being sent right now; once it trains, "
                "/forget ID stops it."
            )
            return
        if collection is not None:
            self.collections.close(chat_id)
            await message.answer(
                f"Dropped the {photos_text(len(collection.photos))} collected for \u201c{collection.name}\u201d. "
                "/train starts again."
            )
            return
        expired = self.collections.expired_name(chat_id)
        training = "; ".join(f"\u201c{name}\u201d: /forget {ft}" for ft, name in self.following[chat_id].items())
        if expired:
            text = nothing_to_train_text(expired, self.collections.idle_s)
        elif training:
            text = f"No photos are being collected here. A training goes on until deleted ({training})."
        else:
            text = "Nothing to cancel: no photos are being collected here (a job's own Cancel button stops it)."
        await message.answer(text)

    async def list_finetunes(self, message: Message) -> None:
        try:
            ids = await self.flux.my_finetunes()
            answers = await asyncio.gather(*(self.flux.finetune_details(ft) for ft in ids), return_exceptions=True)
        except FluxError as error:
            await message.answer(message_of(error))
            return
        await message.answer(finetunes_text([answer for answer in answers if isinstance(answer, dict)]))

    async def forget(self, message: Message, command: CommandObject) -> None:
        if not command.args:
            await message.answer("Say which: /forget ID (/finetunes lists them with their ids).")
            return
        finetune_id = command.args.split()[0]
        try:
            await self.flux.delete_finetune(finetune_id)
        except FluxError as error:
            await message.answer(message_of(error))
            return
        await message.answer(f"Deleted finetune {finetune_id} (stopped first, if it was training).")
