"""A small Telegram Bot API stand-in on loopback: it feeds queued updates to getUpdates, answers what the bot
calls (sendMessage, editMessageText, sendMediaGroup, sendPhoto, answerCallbackQuery, getFile, file downloads)
and records every call, with uploaded files as bytes. Photos, documents and stickers can be sent to the bot."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass

from aiohttp import web

from tests.conftest import free_port

JSON_FIELDS = ("reply_markup", "media", "allowed_updates")
NUMBER_FIELDS = ("chat_id", "message_id", "offset", "timeout", "limit")
ATTACH = "attach://"
MAX_LONG_POLL_S = 1.0  # answer getUpdates within a second, so the bot stops quickly
BOT_USER = {"id": 1, "is_bot": True, "first_name": "Flux", "username": "flux_test_bot"}


@dataclass
class Call:
    method: str
    params: dict  # text fields decoded (JSON fields parsed, ids as int); uploaded files as bytes, also where a
    # field names one ('photo': 'attach://x' -> the bytes of part x)


def user(chat_id: int) -> dict:
    return {"id": chat_id, "is_bot": False, "first_name": "Tester"}


class BotApiStandIn:
    """Use as `async with BotApiStandIn() as telegram:`; point the bot at telegram.base_url."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.updates: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.new_update = asyncio.Event()
        self.ids = itertools.count(1000)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self.runner = web.AppRunner(app)

    async def __aenter__(self):
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_) -> None:
        await self.runner.cleanup()

    # -- what the test does -----------------------------------------------------------

    def _push(self, **update) -> None:
        self.updates.append({"update_id": next(self.ids), **update})
        self.new_update.set()

    def message(self, chat_id: int, **content) -> dict:
        return {
            "message_id": next(self.ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": user(chat_id),
            **content,
        }

    def push_text(self, chat_id: int, text: str) -> None:
        self._push(message=self.message(chat_id, text=text))

    def push_photo(
        self,
        chat_id: int,
        caption: str | None,
        data: bytes,
        *,
        size: tuple[int, int] = (64, 64),
        thumbnail: bytes | None = None,
        media_group_id: str | None = None,
    ) -> str:
        """A photo message (sizes smallest first, as Telegram lists them: the thumbnail, then `data`);
        returns the file id of the largest size."""
        sizes = []
        for content, (width, height) in [*([(thumbnail, (16, 16))] if thumbnail else []), (data, size)]:
            file_id = f"photo{next(self.ids)}"
            self.files[file_id] = content
            sizes.append(
                {
                    "file_id": file_id,
                    "file_unique_id": file_id,
                    "width": width,
                    "height": height,
                    "file_size": len(content),
                }
            )
        content = {"photo": sizes, **({"caption": caption} if caption else {})}
        if media_group_id:
            content["media_group_id"] = media_group_id
        self._push(message=self.message(chat_id, **content))
        return sizes[-1]["file_id"]

    def push_document(
        self, chat_id: int, data: bytes, file_name: str, mime_type: str, *, file_size: int | None = None
    ) -> str:
        """A file sent as a document; file_size: what Telegram claims (default len(data)). Returns its file id."""
        file_id = f"doc{next(self.ids)}"
        self.files[file_id] = data
        document = {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": len(data) if file_size is None else file_size,
        }
        self._push(message=self.message(chat_id, document=document))
        return file_id

    def push_sticker(self, chat_id: int) -> None:
        sticker = {
            "file_id": "s1",
            "file_unique_id": "s1",
            "type": "regular",
            "width": 1,
            "height": 1,
            "is_animated": False,
            "is_video": False,
        }
        self._push(message=self.message(chat_id, sticker=sticker))

    def push_button(self, chat_id: int, message: dict, data: str) -> None:
        query = {
            "id": str(next(self.ids)),
            "from": user(chat_id),
            "chat_instance": "ci",
            "message": message,
            "data": data,
        }
        self._push(callback_query=query)

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def wait_for(self, condition, timeout_s: float = 30.0):
        """condition() once it is truthy; fail with what the bot sent otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            await asyncio.sleep(0.05)
        sent = [(c.method, {k: v for k, v in c.params.items() if not isinstance(v, bytes)}) for c in self.calls]
        raise AssertionError(f"not seen within {timeout_s} s; the bot called: {sent}")

    # -- the Bot API (each method answered by `_<its name>`) --------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append(Call(method, params))
        answer = getattr(self, f"_{method}", None)
        result = await answer(params) if answer else True
        return web.json_response({"ok": True, "result": result})

    async def _params(self, request: web.Request) -> dict:
        form = await request.post() if request.body_exists else {}
        params = {}
        for name, value in form.items():
            if isinstance(value, web.FileField):
                params[name] = value.file.read()
            elif name in JSON_FIELDS:
                params[name] = json.loads(value)
            elif name in NUMBER_FIELDS:
                params[name] = int(value)
            else:
                params[name] = value
        for name, value in list(params.items()):  # aiogram sends a photo as 'attach://<part>' and the part
            if isinstance(value, str) and value.startswith(ATTACH) and value.removeprefix(ATTACH) in params:
                params[name] = params[value.removeprefix(ATTACH)]
        return params

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        if file_id not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[file_id])

    async def _getMe(self, params: dict) -> dict:
        return BOT_USER

    async def _getUpdates(self, params: dict) -> list[dict]:
        offset = params.get("offset", 0)
        deadline = time.monotonic() + min(MAX_LONG_POLL_S, params.get("timeout", 0))
        while True:
            pending = [update for update in self.updates if update["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return pending
            self.new_update.clear()
            try:
                await asyncio.wait_for(self.new_update.wait(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    def _sent(self, params: dict, **content) -> dict:
        message = self.message(params["chat_id"], **content)
        message["from"] = BOT_USER
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        return message

    async def _sendMessage(self, params: dict) -> dict:
        return self._sent(params, text=params["text"])

    async def _editMessageText(self, params: dict) -> dict:
        message = self._sent(params, text=params["text"])
        message["message_id"] = params["message_id"]
        return message

    def _photo(self, data: bytes) -> list[dict]:
        file_id = f"sent{next(self.ids)}"
        self.files[file_id] = data
        return [{"file_id": file_id, "file_unique_id": file_id, "width": 64, "height": 64}]

    async def _sendPhoto(self, params: dict) -> dict:
        return self._sent(params, photo=self._photo(params["photo"]), caption=params.get("caption"))

    async def _sendMediaGroup(self, params: dict) -> list[dict]:
        group = str(next(self.ids))
        return [
            self._sent(
                params,
                photo=self._photo(params[item["media"].removeprefix("attach://")]),
                caption=item.get("caption"),
                media_group_id=group,
            )
            for item in params["media"]
        ]

    async def _getFile(self, params: dict) -> dict:
        file_id = params["file_id"]
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_size": len(self.files.get(file_id, b"")),
            "file_path": f"photos/{file_id}",
        }


def album_photos(call: Call) -> list[tuple[bytes, str]]:
    """(image bytes, caption) of each photo of a sendMediaGroup call."""
    return [
        (call.params[item["media"].removeprefix("attach://")], item.get("caption")) for item in call.params["media"]
    ]
