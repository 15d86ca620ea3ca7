"""One job from a chat: submit (retrying while the service is down), a status message edited as it goes,
the album with seeds in captions, and the buttons under it. Every failure ends as a message in the chat."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, InputMediaPhoto

from flux_client.bot_config import BotConfig
from flux_client.bot_keyboards import Buttons, album_keyboard, running_keyboard
from flux_client.bot_limits import ChatRateLimit, Verdict
from flux_client.bot_options import Submission
from flux_client.bot_signing import CallbackSigner
from flux_client.client import AsyncFluxClient
from flux_client.errors import FluxAPIError, FluxConnectionError, FluxError, JobFailed
from flux_client.progress import JobUpdate

log = logging.getLogger(__name__)
ALBUM_MAX_PHOTOS = 10  # Telegram's sendMediaGroup limit


def message_of(error: FluxError) -> str:
    """What the chat is told of a failure: the API's own words, or what kept the service out of reach."""
    return error.message if isinstance(error, FluxAPIError) else str(error)


def refusal_text(error: FluxAPIError) -> str:
    """The API's own words (for an edit, they name the input_image field at fault)."""
    return f"The service refused this request: {error.message}"


def queued_text(submitted: dict) -> str:
    """The status right after submit: queued, with the service's estimate of the wait when it gives one."""
    eta_s = submitted.get("eta_s")
    return "queued" if eta_s is None else f"queued, ready in about {max(1, round(eta_s))} s"


def ended_text(job: dict) -> str:
    if job["status"] == "Cancelled":
        return "Cancelled."
    return f"The job ended {job['status']}: {job.get('error') or 'no reason given'}"


class JobRunner:
    """Runs chats' jobs against one AsyncFluxClient: at most config.max_jobs_per_chat at a time and
    config.jobs_per_minute a minute per chat (past that, one refusal, then new jobs are dropped quietly)."""

    def __init__(self, bot: Bot, flux: AsyncFluxClient, config: BotConfig, clock=time.monotonic):
        self.bot, self.flux, self.config = bot, flux, config
        self.running: Counter[int] = Counter()
        self.signer = CallbackSigner.for_token(config.token)
        self.per_minute = ChatRateLimit(config.jobs_per_minute, 60.0, clock=clock)

    def buttons(self, chat_id: int) -> Buttons:
        return Buttons(self.signer, chat_id)

    async def run(self, chat_id: int, submission: Submission) -> None:
        if self.running[chat_id] >= self.config.max_jobs_per_chat:
            await self.say(
                chat_id,
                f"{self.running[chat_id]} jobs are already running in this chat (the limit is "
                f"{self.config.max_jobs_per_chat}); wait for one to finish or press its Cancel button.",
            )
            return
        verdict = self.per_minute.check(chat_id)
        if verdict is Verdict.DROP:
            log.info("job from chat %s dropped: over %s a minute", chat_id, self.config.jobs_per_minute)
            return
        if verdict is Verdict.REFUSE:
            await self.say(
                chat_id,
                f"This chat has started {self.config.jobs_per_minute} jobs in the last minute, the most I take; "
                f"try again in {math.ceil(self.per_minute.retry_after_s(chat_id)) or 1} s. Until then I skip new prompts "
                "here without answering.",
            )
            return
        self.running[chat_id] += 1
        try:
            await self._run(chat_id, submission)
        finally:
            self.running[chat_id] -= 1

    async def _run(self, chat_id: int, submission: Submission) -> None:
        status = await self.say(chat_id, "Submitting\u2026")
        if status is None:
            return
        edit = StatusMessage(self.bot, chat_id, status, self.config.status_edit_interval_s)
        submitted = await self._submit(submission, edit)
        if submitted is None:
            return
        job_id = submitted["id"]
        started_s = time.monotonic()
        buttons = self.buttons(chat_id)
        await edit.show(queued_text(submitted), running_keyboard(buttons, job_id), force=True)
        halfway = HalfwayPreview(self.bot, chat_id, status)

        async def on_progress(update: JobUpdate) -> None:
            await edit.show(update.describe(), running_keyboard(buttons, job_id))
            await halfway.offer(update)

        try:
            job = await self.flux.wait(job_id, on_progress=on_progress, timeout_s=self.config.job_timeout_s)
            images = await self.flux.image_bytes(job)
        except JobFailed as failed:
            await edit.show(ended_text(failed.job), force=True)
            return
        except FluxAPIError as error:
            await edit.show(f"The service refused: {error.message} (job {job_id})", force=True)
            return
        except FluxConnectionError:
            await edit.show(
                f"Lost contact with the image service while job {job_id} was running; try again later.", force=True
            )
            return
        except TimeoutError:
            timeout_s = self.config.job_timeout_s
            await edit.show(f"Job {job_id} takes longer than {timeout_s:g} s; I stopped waiting.", force=True)
            return
        await edit.show(f"Done: {len(images)} image(s) in {time.monotonic() - started_s:.1f} s.", force=True)
        await self._send_album(chat_id, job, images)

    async def _submit(self, submission: Submission, edit: StatusMessage) -> dict | None:
        """The submit's answer (id, eta_s), retrying while the service is unreachable; None after a refusal or when
        it stays down."""
        delays_s = self.config.service_retry_delays_s
        for attempt in range(len(delays_s) + 1):
            try:
                return await self.flux.submit_job(submission.prompt, submission.model, **submission.fields())
            except FluxAPIError as error:
                await edit.show(refusal_text(error), force=True)
                return None
            except FluxConnectionError:
                if attempt == len(delays_s):
                    break
                await edit.show(
                    f"The image service is not reachable right now; retrying in {delays_s[attempt]:g} s "
                    f"(try {attempt + 1} of {len(delays_s)})\u2026",
                    force=True,
                )
                await asyncio.sleep(delays_s[attempt])
            except (FluxError, ValueError, OSError) as error:
                await edit.show(f"Could not submit: {error}", force=True)
                return None
        await edit.show("The image service is down, so I cannot draw right now. Please try again later.", force=True)
        return None

    async def _send_album(self, chat_id: int, job: dict, images: list[bytes]) -> None:
        photos = [
            (BufferedInputFile(data, filename=f"{job['seed'] + index}.jpg"), f"seed {job['seed'] + index}")
            for index, data in enumerate(images)
        ]
        try:
            for start in range(0, len(photos), ALBUM_MAX_PHOTOS):
                chunk = photos[start : start + ALBUM_MAX_PHOTOS]
                if len(chunk) == 1:
                    await self.bot.send_photo(chat_id, chunk[0][0], caption=chunk[0][1])
                else:
                    media = [InputMediaPhoto(media=photo, caption=caption) for photo, caption in chunk]
                    await self.bot.send_media_group(chat_id, media)
        except TelegramAPIError as error:
            log.warning("sending the album of job %s failed: %s", job["id"], error)
            await self.say(chat_id, f"Telegram refused the images of job {job['id']}: {error}")
            return
        last_seed = job["seed"] + len(images) - 1
        seeds = f"seed {job['seed']}" if len(images) == 1 else f"seeds {job['seed']}\u2013{last_seed}"
        await self.say(chat_id, f"{job['model']} \u00b7 {seeds}", album_keyboard(self.buttons(chat_id), job["id"]))

    async def say(self, chat_id: int, text: str, keyboard: InlineKeyboardMarkup | None = None) -> int | None:
        """Send a message; its id, or None when Telegram refuses (logged, never raised)."""
        try:
            return (await self.bot.send_message(chat_id, text, reply_markup=keyboard)).message_id
        except TelegramAPIError as error:
            log.warning("sending to chat %s failed: %s", chat_id, error)
            return None


class HalfwayPreview:
    """One look at the image as it forms: the first preview from halfway through the steps, sent as a photo in
    reply to the job's status message (a text message cannot become a photo), once."""

    def __init__(self, bot: Bot, chat_id: int, status_message_id: int):
        self.bot, self.chat_id, self.status_message_id = bot, chat_id, status_message_id
        self.sent = False

    async def offer(self, update: JobUpdate) -> None:
        picture = update.preview_image()
        if self.sent or picture is None or not update.total or 2 * picture[0] < update.total:
            return
        self.sent = True
        step, image = picture
        try:
            await self.bot.send_photo(
                self.chat_id,
                BufferedInputFile(image, filename=f"step-{step}.jpg"),
                caption=f"Forming: step {step} of {update.total}",
                reply_to_message_id=self.status_message_id,
            )
        except TelegramAPIError as error:  # a preview is a courtesy: the job goes on
            log.info("preview not sent to chat %s: %s", self.chat_id, error)


class StatusMessage:
    """The one status message of a job: edited when its text changes, at most once per interval unless forced."""

    def __init__(self, bot: Bot, chat_id: int, message_id: int, interval_s: float, clock=time.monotonic):
        self.bot, self.chat_id, self.message_id, self.interval_s = bot, chat_id, message_id, interval_s
        self.clock = clock
        self.text, self.edited_at = "", None

    async def show(self, text: str, keyboard: InlineKeyboardMarkup | None = None, force: bool = False) -> None:
        """Edit to `text`, unless it is the text shown or (not forced) the last edit is under interval_s old."""
        now = self.clock()
        recent = self.edited_at is not None and now - self.edited_at < self.interval_s
        if text == self.text or (recent and not force):
            return
        self.text, self.edited_at = text, now
        try:
            await self.bot.edit_message_text(
                text=text, chat_id=self.chat_id, message_id=self.message_id, reply_markup=keyboard
            )
        except TelegramBadRequest as error:
            log.debug("status edit skipped: %s", error)  # e.g. "message is not modified", or deleted by the user
        except TelegramAPIError as error:
            log.warning("status edit failed: %s", error)
