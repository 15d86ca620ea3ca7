"""A pluggable image safety checker: inputs it flags end `Request Moderated`, outputs `Content Moderated`.

A checker scores one image from 0 (safe) to 1 (certainly unsafe); the request's BFL
`safety_tolerance` (0 strictest .. 6 most permissive, default 2) sets the score at which an
image is flagged. Configure one as `safety.checker: "module:Class"` (built with no arguments,
once per replica), or by a built-in name: `nudenet` (the optional extra `flux-serve[nudenet]`);
none is configured by default.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Protocol

import numpy as np
from PIL import Image

NUDENET = "nudenet"
BUILT_IN = {NUDENET: f"{__name__}:NudeNetChecker"}  # short names for `safety.checker`
NEEDS = {NUDENET: ("nudenet", "flux-serve[nudenet]")}  # built-in name -> (module it imports, what to install)


# NudeNet's classes that make an image unsafe here; the others it detects (faces, feet,
# armpits, belly, a male chest, anything covered) do not.
NUDENET_UNSAFE_CLASSES = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)


class SafetyCheckerError(ValueError):
    """`safety.checker` names a checker that cannot be loaded; the message says what to install or fix."""


class ImageSafetyChecker(Protocol):
    def unsafe_score(self, image: Image.Image) -> float:
        """0 (safe) .. 1 (certainly unsafe)."""


def flag_threshold(safety_tolerance: int) -> float:
    """The score at or above which an image is flagged: 0.2 at tolerance 0, 0.4 at 2, 0.8 at 6."""
    return 0.2 + 0.1 * safety_tolerance


class NudeNetChecker:
    """NudeNet's own ONNX detector (the 320n model in its wheel), run on the CPU by onnxruntime.

    The score is the highest confidence of any exposed-nudity detection (NUDENET_UNSAFE_CLASSES),
    0 when there is none (NudeNet itself drops detections under 0.2). `nudenet` is imported
    here, not at module load, so the service runs without the extra installed. Licence: the
    nudenet 3.4.2 wheel's metadata says MIT, but the LICENSE files it ships are the GNU AGPL v3.
    """

    def __init__(self) -> None:
        check_spec(NUDENET)
        from nudenet import NudeDetector

        self.detector = NudeDetector()

    def unsafe_score(self, image: Image.Image) -> float:
        detections = self.detector.detect(np.asarray(image.convert("RGB")))
        return max(
            (float(found["score"]) for found in detections if found["class"] in NUDENET_UNSAFE_CLASSES), default=0.0
        )


def check_spec(spec: str) -> str:
    """The 'module:Class' a `safety.checker` value stands for, or SafetyCheckerError saying what is missing.

    Checks that the modules can be found without importing them (nothing heavy loads here).
    """
    if spec in NEEDS:
        module, extra = NEEDS[spec]
        if importlib.util.find_spec(module) is None:
            raise SafetyCheckerError(
                f"safety.checker {spec!r} needs the optional extra: pip install '{extra}' "
                f"(the {module!r} package is not installed), or leave safety.checker unset"
            )
    target = BUILT_IN.get(spec, spec)
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise SafetyCheckerError(
            f"safety.checker {spec!r} must be {', '.join(map(repr, BUILT_IN))} or look like 'package.module:ClassName'"
        )
    try:
        found = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        found = None
    if found is None:
        raise SafetyCheckerError(f"safety.checker {spec!r}: no module named {module_name!r}")
    return target


def load_checker(spec: str | None) -> ImageSafetyChecker | None:
    """A built-in name or 'module:Class' -> an instance, or None when no checker is configured."""
    if not spec:
        return None
    module_name, _, class_name = check_spec(spec).partition(":")
    checker = getattr(importlib.import_module(module_name), class_name, None)
    if checker is None:
        raise SafetyCheckerError(f"safety.checker {spec!r}: {module_name} has no {class_name!r}")
    return checker()


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
