"""The test split is untouched by training and selection, and the shipped model passes floors on it that
doing nothing fails.

The floors here were written before the test split was first scored, from the validation figures
(flux_serve.json held_out_*, 4 seeds) and the baselines, and are not to be moved to fit test figures:
- edits: validation joint rate (asked and kept at once) EN 0.844, RU 0.844; shape IoU EN 0.821,
  RU 0.824. The copy baseline's joint rate is 0.000 (it never does what was asked; its IoU, 0.876, is
  above the model's, so IoU alone is no floor), the blank's 0.000. Floor: joint >= 0.6 and IoU >= 0.6 on
  16 edits at one seed (one edit moves the rate by 0.0625), as the validation test in
  test_trained_default.py.
- the recorded figures (48 edits at 4 seeds, both splits): joint >= 0.7, the validation 0.844 less room
  for a split whose edits read or draw triples never trained on; every baseline's joint rate below it.
- text to image: validation EN 0.958 / 0.990 / 0.896 / 0.885 (colour / background / shape / all three).
  Floors 0.85 / 0.85 / 0.7 / 0.6 on half the scenes at two seeds, as the validation test.
"""

import ast
import json
from pathlib import Path

import pytest

from deployments.weights import TRAINED_CHECKPOINT
from training import shapes_test_split
from training.shapes_edits import ATTRIBUTES, all_edits, held_out_edits, training_edits
from training.shapes_scoring import edit_baselines, edit_scores, load, text_to_image_scores
from training.shapes_world import held_out_scenes, training_scenes

REPOSITORY = Path(__file__).resolve().parents[2]
EDIT_FLOORS = {"joint": 0.6, "iou": 0.6}
RECORDED_JOINT_FLOOR = 0.7
# flux_serve.json key prefixes. Scored once, the test split's edits read joint 0.693 in both languages,
# under the floor set before: a gap the validation split hid, kept visible rather than the floor moved.
# strict: the day a checkpoint clears it, this fails until the mark goes.
RECORDED_SPLITS = (
    "held_out",
    pytest.param(
        "held_out_test",
        marks=pytest.mark.xfail(
            strict=True, raises=AssertionError, reason="shipped test-split edits: joint 0.693 < 0.7 (validation 0.844)"
        ),
    ),
)
TEXT_TO_IMAGE_FLOORS = {"colour": 0.85, "background": 0.85, "shape": 0.7, "all": 0.6}
# The only functions that may read the test split: scoring it on purpose, and the commands that do.
TEST_SPLIT_READERS = {
    ("training/shapes_scoring.py", "score_test_split"),
    ("training/shapes_scoring.py", "main"),
    ("bench/shapes_edits.py", "split_items"),
    ("bench/shapes_edits.py", "main"),
}


def meets(scores: dict[str, float], floors: dict[str, float]) -> bool:
    return all(scores[key] >= floor for key, floor in floors.items())


@pytest.fixture(scope="module")
def shipped():
    return load(TRAINED_CHECKPOINT)


def test_test_edits_were_never_trained_on_nor_scored_as_validation():
    edits = shapes_test_split.final_test_edits()
    assert len(edits) == len(set(edits)) == 48
    assert not set(edits) & set(all_edits()), "all_edits holds every trained and every validation edit"
    assert not set(edits) & (set(training_edits()) | set(held_out_edits()))
    held_out, trained = set(held_out_scenes()), set(training_scenes())
    for attribute in ATTRIBUTES:
        chosen = [edit for edit in edits if edit.attribute == attribute]
        assert sum(edit.source in held_out for edit in chosen) == len(chosen) // 2
        assert all(
            edit.target in held_out | trained and edit.target.colour != edit.target.background for edit in chosen
        )
    trained_instructions = {edit.instruction(language) for edit in training_edits() for language in ("en", "ru")}
    assert all(edit.instruction(language) in trained_instructions for edit in edits for language in ("en", "ru"))


def defined_names(module: ast.Module) -> set[str]:
    names = {node.name for node in module.body if isinstance(node, ast.FunctionDef)}
    return names | {target.id for node in module.body if isinstance(node, ast.Assign) for target in node.targets}


def functions_and_names(path: Path) -> dict[str, set[str]]:
    """Each function (and method) of a module -> every name and attribute it mentions."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = {
                inner.id if isinstance(inner, ast.Name) else inner.attr
                for inner in ast.walk(node)
                if isinstance(inner, ast.Name | ast.Attribute)
            }
    return found


def test_no_training_or_selection_code_reads_the_test_split():
    """Every function of training/, bench/ and lora/ that mentions the split's names, or a function that
    does (transitively, by name), is one of TEST_SPLIT_READERS: the trainers, `score_checkpoint` (which
    the trainers call) and flux-bench never reach it."""
    split_path = Path(shapes_test_split.__file__)
    reaching = defined_names(ast.parse(split_path.read_text())) | {"shapes_test_split"}
    modules = {
        str(path.relative_to(REPOSITORY)): functions_and_names(path)
        for folder in ("training", "bench", "lora")
        for path in sorted((REPOSITORY / folder).rglob("*.py"))
        if path != split_path
    }
    readers: set[tuple[str, str]] = set()
    while True:
        found = {
            (module, name)
            for module, functions in modules.items()
            for name, mentioned in functions.items()
            if mentioned & reaching
        }
        if found <= readers:
            break
        readers |= found
        reaching |= {name for _module, name in found if name != "main"}  # an entry point nobody calls
    assert readers == TEST_SPLIT_READERS
    importers = {
        str(path.relative_to(REPOSITORY))
        for folder in ("training", "bench", "lora", "deployments", "serve_apps")
        for path in (REPOSITORY / folder).rglob("*.py")
        if "shapes_test_split" in path.read_text() and path != split_path
    }
    assert importers == {module for module, _function in TEST_SPLIT_READERS}


@pytest.mark.parametrize("language", ["en", "ru"])
def test_shipped_model_edits_the_test_split_and_doing_nothing_does_not(shipped, language):
    """A third of the test edits, one seed; the same floors fail the copy and the blank baselines."""
    edits = shapes_test_split.final_test_edits()[::3]
    first_seed, source_seed = shapes_test_split.FINAL_TEST_FIRST_SEED, shapes_test_split.FINAL_TEST_SOURCE_SEED
    scores = edit_scores(*shipped, edits, 1, language, first_seed, source_seed)
    assert meets(scores, EDIT_FLOORS), scores
    for name, baseline in edit_baselines(edits, source_seed).items():
        assert not meets(baseline, EDIT_FLOORS), (name, baseline)


def test_shipped_model_draws_the_test_samples(shipped):
    """Half the held-out scenes at the test split's unscored seeds, two each, English."""
    scenes = held_out_scenes()[::2]
    scores = text_to_image_scores(*shipped, scenes, 2, "en", first_seed=shapes_test_split.FINAL_TEST_FIRST_SEED)
    assert meets(scores, TEXT_TO_IMAGE_FLOORS), scores


@pytest.mark.parametrize("split", RECORDED_SPLITS)
def test_recorded_edit_figures_beat_doing_nothing(split):
    """The figures flux_serve.json records (and the README quotes) are above the floor in both languages,
    and neither baseline on the same edits is."""
    settings = json.loads((TRAINED_CHECKPOINT / "flux_serve.json").read_text())
    for suffix in ("", "_ru"):
        assert settings[f"{split}_edit_scores{suffix}"]["joint"] >= RECORDED_JOINT_FLOOR, suffix
    for name, baseline in settings[f"{split}_edit_baselines"].items():
        assert baseline["joint"] < RECORDED_JOINT_FLOOR and baseline["asked"] < RECORDED_JOINT_FLOOR, name
