"""The image safety checkers: spec loading and its errors, and the optional NudeNet checker."""

import sys

import pytest
from PIL import Image, ImageDraw

from serve_apps.security import safety


def red_circle() -> Image.Image:
    image = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(image).ellipse((64, 64, 192, 192), fill="red")
    return image


def test_nudenet_scores_a_plain_drawing_low():
    pytest.importorskip("nudenet", reason="the optional extra flux-serve[nudenet] is not installed")
    checker = safety.load_checker("nudenet")
    assert isinstance(checker, safety.NudeNetChecker)
    score = checker.unsafe_score(red_circle())
    assert 0.0 <= score < safety.flag_threshold(0)
    assert safety.refusal(checker, [red_circle()], 0, "output image") is None


class FakeDetector:
    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        assert image.shape == (256, 256, 3)  # an RGB array, whatever mode the image came in
        return self.detections


def test_nudenet_score_is_the_most_confident_exposed_detection():
    checker = object.__new__(safety.NudeNetChecker)  # the mapping alone: no nudenet needed
    checker.detector = FakeDetector(
        [
            {"class": "FACE_FEMALE", "score": 0.95, "box": [0, 0, 9, 9]},
            {"class": "FEMALE_BREAST_COVERED", "score": 0.9, "box": [0, 0, 9, 9]},
            {"class": "FEET_EXPOSED", "score": 0.8, "box": [0, 0, 9, 9]},
            {"class": "BUTTOCKS_EXPOSED", "score": 0.41, "box": [0, 0, 9, 9]},
            {"class": "FEMALE_GENITALIA_EXPOSED", "score": 0.63, "box": [0, 0, 9, 9]},
        ]
    )
    assert checker.unsafe_score(red_circle().convert("RGBA")) == pytest.approx(0.63)
    checker.detector = FakeDetector([{"class": "FACE_MALE", "score": 0.99, "box": [0, 0, 9, 9]}])
    assert checker.unsafe_score(red_circle()) == 0.0


def test_nudenet_selected_but_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # as if the extra were not installed
    with pytest.raises(safety.SafetyCheckerError, match=r"pip install 'flux-serve\[nudenet\]'"):
        safety.load_checker("nudenet")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nudenett", "must be 'nudenet' or look like 'package.module:ClassName'"),
        ("no_such_package.checks:Checker", "no module named 'no_such_package.checks'"),
        ("serve_apps.security.safety:NoSuchChecker", "serve_apps.security.safety has no 'NoSuchChecker'"),
    ],
)
def test_a_bad_checker_spec_is_named(spec, message):
    with pytest.raises(safety.SafetyCheckerError, match=message):
        safety.load_checker(spec)


def test_no_checker_by_default():
    assert safety.load_checker(None) is None and safety.load_checker("") is None
