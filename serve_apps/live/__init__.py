"""The live channel: progress and cancel of running jobs, between the ingress replicas and the workers.

One port (`LiveChannel`), two implementations: `InProcessChannel` (one process: unit tests, a
single-process service) and `RayChannel` (a cluster: one named Ray actor every replica reaches).
Final states stay in the database; this carries only what changes at every step. Torch-free.
"""

from __future__ import annotations

from serve_apps.live.channel import InProcessChannel, LiveChannel, local_channel
from serve_apps.live.observer import LiveObserver
from serve_apps.live.ray_channel import RayChannel


def open_channel() -> LiveChannel:
    """The cluster's channel when this process is part of a Ray cluster (a replica), else this process's own."""
    import ray

    return RayChannel() if ray.is_initialized() else local_channel()


__all__ = ["InProcessChannel", "LiveChannel", "LiveObserver", "RayChannel", "local_channel", "open_channel"]
