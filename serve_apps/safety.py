"""A pluggable image safety checker: inputs it flags end `Request Moderated`, outputs `Content Moderated`.

A checker scores one image from 0 (safe) to 1 (certainly unsafe); the request's BFL
`safety_tolerance` (0 strictest .. 6 most permissive, default 2) sets the score at which an
image is flagged. Configure one as `safety.checker: "module:Class"` (built with no arguments,
once per replica); none is configured by default.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from PIL import Image


class ImageSafetyChecker(Protocol):
    def unsafe_score(self, image: Image.Image) -> float:
        """0 (safe) .. 1 (certainly unsafe)."""


def flag_threshold(safety_tolerance: int) -> float:
    """The score at or above which an image is flagged: 0.2 at tolerance 0, 0.4 at 2, 0.8 at 6."""
    return 0.2 + 0.1 * safety_tolerance


def load_checker(spec: str | None) -> ImageSafetyChecker | None:
    """'module:Class' -> an instance, or None when no checker is configured."""
    if not spec:
        return None
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise ValueError(f"safety.checker {spec!r} must look like 'package.module:ClassName'")
    return getattr(importlib.import_module(module_name), class_name)()


def refusal(
    checker: ImageSafetyChecker | None, images: list[Image.Image], safety_tolerance: int, what: str
) -> str | None:
    """Why these images are withheld, or None: the first one scoring at or over the request's threshold."""
    if checker is None:
        return None
    threshold = flag_threshold(safety_tolerance)
    for number, image in enumerate(images):
        score = checker.unsafe_score(image)
        if score >= threshold:
            return (
                f"{what} {number} was flagged by the image safety checker (score {score:.2f} >= {threshold:.2f} "
                f"at safety_tolerance {safety_tolerance})"
            )
    return None
