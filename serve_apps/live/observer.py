"""A step loop's observer over a live channel, one per batch: it never makes the loop wait.

Progress is sent without waiting, at most every PUBLISH_EVERY_S per job (and always at the last step).
Cancel is asked for all the batch's jobs in one question before the first pass (that answer is waited for, at
most FIRST_ANSWER_TIMEOUT_S), then at most every ASK_EVERY_S, and the loop reads the latest answer that has come
back; a question unanswered after ASK_STALE_S (its holder restarting) is asked again. A cancel once seen stays seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from deployments.progress import Progress
from serve_apps.live.channel import LiveChannel

logger = logging.getLogger("flux_serve.live")

PUBLISH_EVERY_S = 0.1
ASK_EVERY_S = 0.25
ASK_STALE_S = 5.0
FIRST_ANSWER_TIMEOUT_S = 1.0


class LiveObserver:
    def __init__(
        self,
        channel: LiveChannel,
        job_ids: Iterable[str],
        publish_every_s: float = PUBLISH_EVERY_S,
        ask_every_s: float = ASK_EVERY_S,
        clock=time.monotonic,
    ):
        self.channel = channel
        self.job_ids = tuple(dict.fromkeys(job_ids))
        self.publish_every_s = publish_every_s
        self.ask_every_s = ask_every_s
        self.clock = clock
        self.cancelled: set[str] = set()
        self._sent_at: dict[str, float] = {}
        self._asking = None
        self._asked_at = float("-inf")

    def ask_first(self, timeout_s: float = FIRST_ANSWER_TIMEOUT_S) -> None:
        """Ask once and wait for the answer (briefly): a job cancelled while it waited in the replica's queue
        never takes a step. Later questions do not wait."""
        self._asked_at = self.clock()
        try:
            self.cancelled |= set(self.channel.ask_cancelled(self.job_ids).result(timeout=timeout_s))
        except Exception:  # the holder restarting, or slow: the step loop asks again at its next interval
            logger.warning("cancel of jobs %s unknown before the first step", self.job_ids, exc_info=True)

    def on_step(self, progress: Progress) -> None:
        now = self.clock()
        last = self._sent_at.get(progress.job_id)
        if progress.step >= progress.of or last is None or now - last >= self.publish_every_s:
            self._sent_at[progress.job_id] = now
            try:
                self.channel.send(progress)
            except Exception:  # progress is best effort: the next step sends it again
                logger.warning("job %s: progress not sent", progress.job_id, exc_info=True)

    def cancel_requested(self, job_id: str) -> bool:
        if job_id not in self.cancelled:
            self._refresh()
        return job_id in self.cancelled

    def _refresh(self) -> None:
        now = self.clock()
        if self._asking is not None and not self._asking.done() and now - self._asked_at >= ASK_STALE_S:
            self._asking = None
        if self._asking is None and now - self._asked_at >= self.ask_every_s:
            self._asked_at = now
            try:
                self._asking = self.channel.ask_cancelled(self.job_ids)
            except Exception:
                logger.warning("cancel of jobs %s not asked; asking again shortly", self.job_ids, exc_info=True)
        if self._asking is not None and self._asking.done():
            try:
                self.cancelled |= set(self._asking.result())
            except Exception:  # the holder restarting: ask again at the next interval
                logger.warning("cancel of jobs %s unknown; asking again shortly", self.job_ids, exc_info=True)
            self._asking = None
