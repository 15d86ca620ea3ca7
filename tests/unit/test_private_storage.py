"""Local storage is private to the service's user, and the URL-signing key is made once (no Ray)."""

from __future__ import annotations

import os
import stat

from serve_apps.security.signing import load_signing_key
from serve_apps.store.storage import JobStore, new_job_id


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_are_0600_in_0700_folders(tmp_path):
    store = JobStore(str(tmp_path / "store"))
    job_id = new_job_id()
    store.save_image(job_id, "0.png", b"png")
    store.shared_secret("url-signing-key", lambda: "k")
    image = tmp_path / "store" / "jobs" / job_id / "images" / "0.png"
    assert mode(image) == 0o600
    assert mode(tmp_path / "store" / "secrets" / "url-signing-key") == 0o600
    for folder in (image.parent, image.parent.parent, tmp_path / "store" / "jobs", tmp_path / "store"):
        assert mode(folder) == 0o700, folder
    assert not [path for path in (tmp_path / "store").rglob("*.tmp")], "no staging file is left behind"


def test_two_replicas_racing_for_the_signing_key_get_the_same_one(tmp_path, monkeypatch):
    """The second replica makes its key while the first is still writing; both must read the winner's."""
    monkeypatch.delenv("FLUX_URL_SIGNING_KEY", raising=False)
    first, second = JobStore(str(tmp_path)), JobStore(str(tmp_path))
    seen: dict[str, str] = {}

    def make_while_another_replica_wins() -> str:
        seen["second"] = second.shared_secret("url-signing-key", lambda: "second-replica-key")
        return "first-replica-key"

    seen["first"] = first.shared_secret("url-signing-key", make_while_another_replica_wins)
    assert seen == {"first": "second-replica-key", "second": "second-replica-key"}
    assert load_signing_key(first) == b"second-replica-key"
