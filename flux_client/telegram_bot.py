"""The Telegram bot (aiogram 3): prompts, /gen with options, a settings menu, photo edits and album buttons,
fine-tuning on a chat's photos (flux_client.bot_training_chat), all through flux-serve's public HTTP API.
Long polling by default; a webhook when TELEGRAM_WEBHOOK_URL is set.

Settings per chat live in memory: a restart forgets them (jobs themselves live in the service)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from urllib.parse import urlsplit

from aiogram import BaseMiddleware, Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import CallbackQuery, ErrorEvent, Message

from flux_client.bot_config import BotConfig, ConfigError
from flux_client.bot_jobs import JobRunner, message_of
from flux_client.bot_keyboards import (
    CANCEL,
    MORE,
    SET,
    apply_setting,
    describe_settings,
    parse_callback,
    settings_keyboard,
)
from flux_client.bot_limits import ChatRateLimit, Verdict
from flux_client.bot_options import ChatSettings, OptionError, parse_prompt, repeat_job, with_model
from flux_client.bot_training_chat import TrainingChat
from flux_client.client import AsyncFluxClient
from flux_client.errors import FluxError
from flux_client.protocol import MAX_INPUT_IMAGES

log = logging.getLogger(__name__)

HELP = """Send me a prompt and I draw it, e.g.
a red circle on a blue background

Options go after the prompt (or use /gen):
/gen a fox --n 4 --ar 16:9 --model 9b --seed 7 --lora mystyle:0.8
  --n images, --ar aspect ratio, --model 4b or 9b, --seed number, --lora ID[:SCALE] (repeatable),
  --finetune ID[:STRENGTH] (one of your finetunes, or last: this chat's last; strength 0..2, default its best)

/settings: this chat's model, aspect ratio and number of images
A photo with a caption: that photo edited as the caption says, e.g. make the background yellow --n 2
(an album of up to 4 photos with one caption: all of them, e.g. the person sitting in the room)
Under each album: Again (a new seed) and Same seed, 4 more (the next 4 seeds of its series).

Teach it your own character, style or product:
/train [name] [--mode general|character|style|product] [--trigger WORD] [--iterations N]
  then send 1-50 photos (a caption becomes that photo's caption), then /done; /cancel stops collecting
/finetunes: your finetunes and their ids; /forget ID: stop and delete one"""

NOT_UNDERSTOOD = "I understand text prompts, photos with a caption and, after /train, photos to learn from; see /help."
PHOTO_WITHOUT_CAPTION = (
    "Send the photo with a caption saying what to change, e.g. make the background yellow "
    "(options work there too: --n 2 --seed 7)."
)


def chat_id_of(event: Message | CallbackQuery) -> int:
    if isinstance(event, Message):
        return event.chat.id
    return event.message.chat.id if event.message else event.from_user.id


class AllowList(BaseMiddleware):
    """Chats outside TELEGRAM_ALLOWED_CHATS get a polite refusal and nothing else."""

    def __init__(self, config: BotConfig):
        self.config = config

    async def __call__(self, handler, event, data):
        chat_id = chat_id_of(event)
        if self.config.allows(chat_id):
            return await handler(event, data)
        text = (
            "Sorry, this bot only works in the chats its owner has allowed. "
            f"(This chat's id is {chat_id}; the owner can add it to TELEGRAM_ALLOWED_CHATS.)"
        )
        try:
            await (event.answer(text) if isinstance(event, Message) else event.answer(text, show_alert=True))
        except TelegramAPIError as error:
            log.warning("refusal to chat %s not delivered: %s", chat_id, error)
        return None


class FloodGate(BaseMiddleware):
    """At most config.updates_per_minute messages and button presses per chat: past that, one reply saying
    so, then the chat's updates are dropped quietly until the window lets it through again. It runs before
    the allow-list, so a stranger's flood is not answered message by message either. What `exempt` says yes to
    passes uncounted: the photos of a training (50 may come in a minute) while its collection has room."""

    def __init__(self, config: BotConfig, clock=time.monotonic, exempt=lambda event: False):
        self.config = config
        self.limit = ChatRateLimit(config.updates_per_minute, 60.0, clock=clock)
        self.exempt = exempt

    async def __call__(self, handler, event, data):
        if self.exempt(event):
            return await handler(event, data)
        chat_id = chat_id_of(event)
        verdict = self.limit.check(chat_id)
        if verdict is Verdict.ALLOW:
            return await handler(event, data)
        if verdict is Verdict.REFUSE:
            text = (
                f"That is more than {self.config.updates_per_minute} messages a minute, so I skip what this "
                "chat sends for a little while, without answering. Try again in a minute."
            )
            try:
                await (event.answer(text) if isinstance(event, Message) else event.answer(text, show_alert=True))
            except TelegramAPIError as error:
                log.warning("flood notice to chat %s not delivered: %s", chat_id, error)
        else:
            log.debug("update from chat %s dropped: over %s a minute", chat_id, self.config.updates_per_minute)
        return None


class ChatBot:
    """The bot's handlers and state: per-chat settings (in memory), the served models, the job runner."""

    def __init__(self, bot: Bot, flux: AsyncFluxClient, config: BotConfig):
        self.bot, self.flux, self.config = bot, flux, config
        self.runner = JobRunner(bot, flux, config)
        self.albums: dict[str, list[Message]] = {}  # media_group_id -> its photo messages, while they arrive
        self.settings: defaultdict[int, ChatSettings] = defaultdict(ChatSettings)
        self.training = TrainingChat(self.runner, self.settings)
        self.models: list[str] = []

    async def served_models(self) -> list[str]:
        """The ids of the models the service serves (not the specs it only knows, `served: false`); the last
        known list (maybe empty) while it is unreachable."""
        try:
            self.models = [model["id"] for model in await self.flux.models() if model.get("served", True)]
        except FluxError as error:
            log.info("models not listed: %s", error)
        return self.models

    def router(self) -> Router:
        router = Router(name="flux")
        router.message(CommandStart())(self.help)
        router.message(Command("help"))(self.help)
        router.message(Command("settings"))(self.show_settings)
        router.message(Command("gen"))(self.gen)
        router.message(Command("train"))(self.training.train)
        router.message(Command("done"))(self.training.done)
        router.message(Command("cancel"))(self.training.cancel)
        router.message(Command("finetunes"))(self.training.list_finetunes)
        router.message(Command("forget"))(self.training.forget)
        router.message(F.photo | F.document, self.training.collecting)(self.training.add_photo)
        router.message(F.photo)(self.edit_photo)
        router.message(F.text.startswith("/"))(self.unknown_command)
        router.message(F.text)(self.prompt)
        router.message()(self.not_understood)
        router.callback_query()(self.button)
        return router

    async def help(self, message: Message) -> None:
        await message.answer(HELP)

    async def not_understood(self, message: Message) -> None:
        await message.answer(NOT_UNDERSTOOD)

    async def unknown_command(self, message: Message) -> None:
        await message.answer(f"I do not know {message.text.split()[0]}. {NOT_UNDERSTOOD}")

    async def gen(self, message: Message, command: CommandObject) -> None:
        if not command.args:
            await message.answer("Write a prompt after /gen, e.g. /gen a red circle on a blue background --n 4")
            return
        await self.generate(message, command.args)

    async def prompt(self, message: Message) -> None:
        await self.generate(message, message.text)

    async def edit_photo(self, message: Message) -> None:
        """A photo with a caption: its largest size (Telegram lists sizes smallest first) fetched through
        getFile and sent as input_image, the caption being the prompt (with options, as after /gen).
        An album arrives as one message per photo: the first waits album_wait_s for the others."""
        messages = [message]
        if message.media_group_id:
            album = self.albums.setdefault(message.media_group_id, [])
            album.append(message)
            if len(album) > 1:
                return
            await asyncio.sleep(self.config.album_wait_s)
            messages = sorted(self.albums.pop(message.media_group_id), key=lambda m: m.message_id)
        caption = next((m.caption for m in messages if m.caption), None)
        if not caption:
            await message.answer(PHOTO_WITHOUT_CAPTION)
            return
        if len(messages) > MAX_INPUT_IMAGES:
            await message.answer(
                f"That album has {len(messages)} photos; I edit up to {MAX_INPUT_IMAGES} at once. Send fewer."
            )
            return
        photos = []
        for photo_message in messages:
            try:
                photos.append((await self.bot.download(photo_message.photo[-1])).read())
            except TelegramAPIError as error:
                await message.answer(f"I could not fetch the photo from Telegram: {error}")
                return
        await self.generate(message, caption, photos)

    async def generate(self, message: Message, text: str, images: list[bytes] | None = None) -> None:
        try:
            submission = parse_prompt(text, self.settings[message.chat.id])
        except OptionError as error:
            await message.answer(str(error))
            return
        if submission.model not in self.models:
            submission = with_model(submission, await self.served_models())
        submission.images = images or []
        await self.runner.run(message.chat.id, submission)

    async def show_settings(self, message: Message) -> None:
        settings = self.settings[message.chat.id]
        await message.answer(
            describe_settings(settings),
            reply_markup=settings_keyboard(settings, await self.served_models(), self.runner.buttons(message.chat.id)),
        )

    async def button(self, query: CallbackQuery) -> None:
        """A button press; its data must carry the signature of the chat whose message holds the button, so a
        forged press (hand-made data, another chat's job) does nothing."""
        chat_id = query.message.chat.id if query.message else None
        verb, argument = parse_callback(query.data, self.runner.signer, chat_id) if chat_id else ("", "")
        if not verb:
            await query.answer("This button no longer works; send a new prompt.")
            return
        if verb == SET:
            await self._change_setting(query, chat_id, argument)
        elif verb == CANCEL:
            try:
                await self.flux.cancel(argument)
                await query.answer("Cancelling\u2026")
            except FluxError as error:
                await query.answer(message_of(error), show_alert=True)
        else:
            try:
                job = await self.flux.job(argument)
                submission = repeat_job(job, same_seed=verb == MORE)
                submission.images = await self.flux.reference_bytes(job)  # an edit: the same photo again
            except FluxError as error:
                await query.answer(message_of(error), show_alert=True)
                return
            await query.answer("4 more of the same seed series" if verb == MORE else "Again, with a new seed")
            await self.runner.run(chat_id, submission)

    async def _change_setting(self, query: CallbackQuery, chat_id: int, argument: str) -> None:
        settings = self.settings[chat_id]
        try:
            changed = apply_setting(settings, argument)
        except ValueError:
            await query.answer("This setting no longer exists; open /settings again.")
            return
        await query.answer(changed)
        try:
            await query.message.edit_text(
                describe_settings(settings),
                reply_markup=settings_keyboard(settings, await self.served_models(), self.runner.buttons(chat_id)),
            )
        except TelegramAPIError as error:
            log.debug("settings menu not refreshed: %s", error)


async def on_error(event: ErrorEvent) -> bool:
    """Log and carry on: one odd update must never stop the bot."""
    log.exception("update %s failed", event.update.update_id, exc_info=event.exception)
    return True


class BotApp:
    """The bot, its client of the image service and its dispatcher, ready to poll or to take webhooks."""

    def __init__(self, config: BotConfig):
        self.config = config
        api = TelegramAPIServer.from_base(config.telegram_api_url) if config.telegram_api_url else None
        self.bot = Bot(config.token, session=AiohttpSession(api=api) if api else AiohttpSession())
        self.flux = AsyncFluxClient(config.flux_url, config.flux_key, poll_interval_s=config.poll_interval_s)
        self.dispatcher = Dispatcher()
        chat_bot = ChatBot(self.bot, self.flux, config)
        flood_gate, allow_list = FloodGate(config, exempt=chat_bot.training.takes_photo), AllowList(config)
        for observer in (self.dispatcher.message, self.dispatcher.callback_query):
            observer.outer_middleware(flood_gate)  # first: a flood gets one answer, allowed chat or not
            observer.outer_middleware(allow_list)
        self.dispatcher.errors.register(on_error)
        self.dispatcher.include_router(chat_bot.router())
        self.dispatcher.shutdown.register(self.flux.aclose)

    async def poll(self, handle_signals: bool = True) -> None:
        """Long polling until stop() (or a signal); a webhook left from webhook mode is removed first."""
        await self.bot.delete_webhook(drop_pending_updates=False)
        await self.dispatcher.start_polling(self.bot, handle_signals=handle_signals, polling_timeout=10)

    async def stop(self) -> None:
        await self.dispatcher.stop_polling()

    def webhook_app(self):
        """An aiohttp application taking Telegram's updates at the webhook URL's path; it registers the webhook
        (with TELEGRAM_WEBHOOK_SECRET, which Telegram sends back and the handler checks) when it starts.
        Without a secret it refuses: anyone who found the URL could post updates as an allowed chat."""
        if not self.config.webhook_secret:
            raise ConfigError(
                "webhook mode needs TELEGRAM_WEBHOOK_SECRET (a random string of letters, digits, _ and -), so that "
                "updates not sent by Telegram are refused."
            )
        from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
        from aiohttp import web

        async def register_webhook(bot: Bot) -> None:
            await bot.set_webhook(self.config.webhook_url, secret_token=self.config.webhook_secret)

        self.dispatcher.startup.register(register_webhook)
        app = web.Application()
        secret = self.config.webhook_secret
        SimpleRequestHandler(dispatcher=self.dispatcher, bot=self.bot, secret_token=secret).register(
            app, path=webhook_path(self.config.webhook_url)
        )
        setup_application(app, self.dispatcher, bot=self.bot)
        return app

    def serve_webhook(self) -> None:
        from aiohttp import web

        host, port = self.config.webhook_listen
        web.run_app(self.webhook_app(), host=host, port=port)


def webhook_path(webhook_url: str) -> str:
    return urlsplit(webhook_url).path or "/"


def run_bot(config: BotConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = BotApp(config)
    if config.webhook_url:
        app.serve_webhook()
    else:
        asyncio.run(app.poll())
