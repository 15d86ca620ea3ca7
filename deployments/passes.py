"""How the requests of one denoiser call are packed into forward passes: the one rule the denoiser runs and the ETA
(serve_apps/jobs/eta.py) simulates, so the estimate packs as the replica does. Torch-free, for the ingress too.

Requests with the same group key (what they must share to run in one latent batch) run together, groups in the
order of their first request, at most `capacity` images a pass; a request is kept whole in a pass where it fits,
and one larger than a pass fills passes of its own. Unshared (a deterministic model), each request is its own group.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


def images_per_pass(width: int, height: int, max_images: int, max_pixels: int) -> int:
    """Images of this size in one pass: the image cap, lowered until their pixels fit (one image always runs)."""
    return max(1, min(max_images, max_pixels // (width * height)))


def pack_passes(
    keys: list[Hashable], images: list[int], capacity: Callable[[int], int], shared: bool = True
) -> list[list[tuple[int, int]]]:
    """The passes in running order, each a list of (request index, image index); `capacity(index)` is how many
    images of that request's kind fit one pass."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key if shared else (index,), []).append(index)
    passes: list[list[tuple[int, int]]] = []
    for indices in groups.values():
        fits = capacity(indices[0])
        current: list[tuple[int, int]] = []
        for index in indices:
            if current and len(current) + images[index] > fits:
                passes.append(current)
                current = []
            for image_index in range(images[index]):
                current.append((index, image_index))
                if len(current) == fits:
                    passes.append(current)
                    current = []
        if current:
            passes.append(current)
    return passes
