"""The test split: edits and samples that no training step, save or setting was chosen on.

The held-out scenes and edits chose the training stages, their saves and the edit guidance, so
they are a validation split. This split is scored once, after every choice, and read by nothing
that trains or selects (tests/unit/test_shapes_test_split.py checks the code paths):

- Edits: the world allows 2352 one-attribute changes between valid scenes; `all_edits` keeps the
  1696 that join two training scenes (1648 trained, 48 validation). The other 656 have a held-out
  triple as source or target, so none was ever trained on or scored. 16 per attribute are drawn
  here, half with a held-out source (the model reads a combination it never drew) and half with a
  held-out target (it draws one), placed by their own seed. Every instruction is still trained.
- Text to image: the world's 168 triples are all trained (144) or validation (24), so no new
  prompt is left without retraining. The test samples the 24 validation triples at seeds never
  scored (figures and stage choices used seeds 0-15 and 100-115): it checks that the choices did
  not ride on lucky samples, not that the model generalises to new prompts.
"""

from __future__ import annotations

import random

from training.shapes_edits import ATTRIBUTES, Edit
from training.shapes_world import COLOURS, SHAPES, all_scenes, held_out_scenes

FINAL_TEST_FIRST_SEED = 500  # sample i of a test item uses seed 500 + i
FINAL_TEST_SOURCE_SEED = 2000  # test edit i's source is placed with random.Random(2000 + i)
FINAL_TEST_EDITS_PER_ATTRIBUTE = 16
FINAL_TEST_EDIT_SEED = 26


def untouched_edits() -> list[Edit]:
    """Every valid one-attribute change with a held-out text-to-image triple as its source or target."""
    held_out = set(held_out_scenes())
    candidates = [
        Edit(source, attribute, value)
        for source in all_scenes()
        for attribute, values in (("background", COLOURS), ("colour", COLOURS), ("shape", SHAPES))
        for value in values
        if value != getattr(source, attribute)
    ]
    return [
        edit
        for edit in candidates
        if edit.target.colour != edit.target.background and (edit.source in held_out or edit.target in held_out)
    ]


def final_test_edits() -> list[Edit]:
    """16 untouched edits per attribute, drawn with a fixed seed: 8 from a held-out source, 8 to a held-out target."""
    chooser, held_out, pool = random.Random(FINAL_TEST_EDIT_SEED), set(held_out_scenes()), untouched_edits()
    half = FINAL_TEST_EDITS_PER_ATTRIBUTE // 2
    chosen = []
    for attribute in ATTRIBUTES:
        of_attribute = [edit for edit in pool if edit.attribute == attribute]
        chosen += chooser.sample([edit for edit in of_attribute if edit.source in held_out], half)
        chosen += chooser.sample([edit for edit in of_attribute if edit.source not in held_out], half)
    return chosen
