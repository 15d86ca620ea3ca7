"""Retention against a submit on another replica (issue 25 item 10, no Ray): a stored reference that
retention found old and unnamed, then written again by a submit whose job row is not in yet, stays."""

from __future__ import annotations

import os
import secrets
import time

from serve_apps.jobs.retention import REFERENCE_GRACE_S, apply_retention
from serve_apps.store import Database
from serve_apps.store.storage import JobStore


def old_reference(store: JobStore, tmp_path) -> tuple[str, object]:
    name = f"{secrets.token_hex(32)}.png"
    store.save_reference(name, b"png")
    path = tmp_path / "store" / "refs" / name
    long_ago = time.time() - 2 * REFERENCE_GRACE_S
    os.utime(path, (long_ago, long_ago))
    return name, path


class SubmitBetweenTheQueryAndTheDelete:
    """The jobs repository, with a submit on another replica landing right after retention asked
    which references are in use: it stores the reference again; its job row comes later."""

    def __init__(self, jobs, store: JobStore, name: str):
        self.jobs, self.store, self.name = jobs, store, name

    def __getattr__(self, attribute):
        return getattr(self.jobs, attribute)

    def inputs_in_use(self, names: list[str]) -> set[str]:
        in_use = self.jobs.inputs_in_use(names)
        assert self.name in names and self.name not in in_use, "retention saw it old and unnamed"
        self.store.save_reference(self.name, b"png")  # the submit: older than the refresh, written again
        return in_use


def test_a_reference_written_again_after_retention_listed_it_is_not_deleted(tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}").jobs
    store = JobStore(str(tmp_path / "store"))
    name, path = old_reference(store, tmp_path)
    apply_retention(SubmitBetweenTheQueryAndTheDelete(db, store, name), store, 30)
    assert store.load_reference(name) == b"png", "the submit's job would find its input image gone"
    assert path.stat().st_mtime > time.time() - 60
    assert sorted(os.listdir(path.parent)) == [name], "nothing moved aside is left behind"


def test_an_old_unnamed_reference_still_goes(tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}").jobs
    store = JobStore(str(tmp_path / "store"))
    name, path = old_reference(store, tmp_path)
    apply_retention(db, store, 30)
    assert not path.exists() and os.listdir(path.parent) == []


def test_a_reference_written_between_the_age_check_and_the_move_is_put_back(tmp_path, monkeypatch):
    """The narrowest interleaving: the submit's write lands after the delete looked at the file's age
    and before it moved it aside; what was moved aside is fresh, so it goes back."""
    store = JobStore(str(tmp_path / "store"))
    name, path = old_reference(store, tmp_path)
    rename = os.rename

    def submit_then_rename(source, target):
        if str(source) == str(path):
            store.save_reference(name, b"new")
        rename(source, target)

    monkeypatch.setattr(os, "rename", submit_then_rename)
    assert store.delete_reference_written_before(name, time.time() - REFERENCE_GRACE_S) is False
    assert store.load_reference(name) == b"new" and sorted(os.listdir(path.parent)) == [name]
