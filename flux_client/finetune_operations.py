"""The client's fine-tuning operations (BFL's finetune API), flows as in flux_client.operations: a mixin of
FluxClient and AsyncFluxClient beside Operations, whose `_call` and `_poll` they use."""

from __future__ import annotations

import functools

from flux_client.errors import JobFailed
from flux_client.finetune import TrainingFiles, failed_finetune, finetune_body, finetune_update
from flux_client.operations import Flow, Offload, ProgressCallback, _Watch, operation
from flux_client.progress import READY

FINETUNE_POLL_FACTOR = 4  # wait_finetune polls this much less often than wait: 2 s by default


class FinetuneOperations:
    """Train, follow, list and delete finetunes; generating with one is `submit(..., finetune=ID)`."""

    @operation
    def create_finetune(
        self,
        folder_or_files: TrainingFiles,
        finetune_comment: str,
        mode: str = "style",
        trigger_word: str = "TOK",
        iterations: int | None = None,
        **settings,
    ) -> Flow[str]:
        """Start training on a folder's images and same-stem .txt captions (or the files given), zipped in
        memory and sent as base64 JSON; returns the finetune id. mode: general, character, style, product or
        edit. settings (None: the server's default): learning_rate, captioning, priority, finetune_type,
        lora_rank, model, webhook_url, webhook_secret."""
        body = yield Offload(
            functools.partial(finetune_body, mode=mode, trigger_word=trigger_word, iterations=iterations, **settings),
            (folder_or_files, finetune_comment),
        )
        return (yield from self._call("POST", "/v1/finetune", json=body))["finetune_id"]

    @operation
    def create_finetune_from_bytes(
        self, files: dict[str, bytes], finetune_comment: str, mode: str = "style", **settings
    ) -> Flow[str]:
        """create_finetune for images held in memory (the bot's photos): {name: bytes}, a.txt beside a.jpg being
        its caption, sent as a multipart form (no base64); settings as create_finetune's (None: the server's)."""
        form = {"finetune_comment": finetune_comment, "mode": mode}
        form |= {name: str(value) for name, value in settings.items() if value is not None}
        uploads = [("files", (name, content)) for name, content in files.items()]
        return (yield from self._call("POST", "/v1/finetune", data=form, files=uploads))["finetune_id"]

    @operation
    def finetune_details(self, finetune_id: str) -> Flow[dict]:
        """Its settings, status, progress, sample URLs and default_strength."""
        return (yield from self._call("GET", "/v1/finetune_details", params={"finetune_id": finetune_id}))

    @operation
    def my_finetunes(self) -> Flow[list[str]]:
        """The ids of this key's finetunes."""
        return (yield from self._call("GET", "/v1/my_finetunes"))["finetunes"]

    @operation
    def delete_finetune(self, finetune_id: str) -> Flow[dict]:
        """Stop it if it still trains, then remove it."""
        return (yield from self._call("POST", "/v1/delete_finetune", json={"finetune_id": finetune_id}))

    @operation
    def wait_finetune(
        self,
        finetune_id: str,
        on_progress: ProgressCallback | None = None,
        timeout_s: float = 7200.0,
        poll_interval_s: float | None = None,
    ) -> Flow[dict]:
        """Poll GET /v1/get_result until it is no longer Pending; returns its result {finetune_id,
        default_strength}. JobFailed if it ended otherwise, TimeoutError after timeout_s. on_progress gets a
        JobUpdate per change, step/total being percent of the training. poll_interval_s: default, the
        client's times FINETUNE_POLL_FACTOR (a training takes minutes)."""
        watch = _Watch(finetune_id, on_progress, timeout_s)
        interval_s = self.poll_interval_s * FINETUNE_POLL_FACTOR if poll_interval_s is None else poll_interval_s
        answer = yield from self._poll(watch, "/v1/get_result", {"id": finetune_id}, finetune_update, interval_s)
        if answer["status"] != READY:
            raise JobFailed(failed_finetune(answer))
        return answer["result"]
