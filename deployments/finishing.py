"""Each request of a `generate` call is handed on as soon as it is done: when its last pass is denoised and its
images are encoded, not when the call's last pass ends. A job that shared a call with larger ones is not kept
waiting for their passes, and its ETA (serve_apps/jobs/eta.py) counts only the passes up to its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

# (request index, its result) once its images are in it; called on the finisher's thread
RequestDone = Callable[[int, object], None]


class RequestFinisher:
    """Completes the requests of one call on a thread of its own, in the order their last passes end, so the
    pipeline's thread goes on with the next pass while a finished request's images are encoded and handed on."""

    def __init__(self, results: list, on_done: RequestDone | None = None):
        self.results = results
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="request-finish")
        self._finishing: list[Future] = []

    def finish(self, request_index: int, encoding: list, manifest) -> None:
        """The request's last pass has run: `encoding` holds its images' (image index, future of (bytes, encoded
        at), denoised at); `manifest` is what made them (None if it was cancelled)."""
        self._finishing.append(self._pool.submit(self._complete, request_index, encoding, manifest))

    def _complete(self, request_index: int, encoding: list, manifest) -> None:
        result = self.results[request_index]
        decode_s: dict[float, float] = {}  # per pass (by when it was denoised): until its last image was encoded
        for image_index, future, denoised_at in encoding:
            data, encoded_at = future.result()
            if not result.cancelled:
                result.images[image_index] = data
                decode_s[denoised_at] = max(decode_s.get(denoised_at, 0.0), encoded_at - denoised_at)
        if result.cancelled:
            result.images = []
        else:
            result.timings_s["decode"] += sum(decode_s.values())
            result.manifest = manifest
        if self.on_done is not None:
            self.on_done(request_index, result)

    def wait(self) -> list:
        """Every request finished (the first failure raised): the results in request order."""
        try:
            for finishing in self._finishing:
                finishing.result()
        finally:
            self.close()
        return self.results

    def close(self) -> None:
        self._pool.shutdown(wait=True)
