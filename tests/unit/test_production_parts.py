"""Signing, webhooks, limits, moderation, history and keys: no Ray needed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pyarrow.parquet as pq
import pytest

from deployments.contracts import GenerationParams
from serve_apps.jobs.history import SCHEMA, export_history
from serve_apps.jobs.records import JobRecord
from serve_apps.jobs.webhooks import deliver, signed_headers
from serve_apps.security.auth import ApiKeys, hash_key, read_keys_file, write_keys_file
from serve_apps.security.limits import KeyLimiter
from serve_apps.security.moderation import PromptPolicy
from serve_apps.security.signing import UrlSigner
from serve_apps.store import Database
from serve_apps.store.storage import new_job_id

KEY_ID = "0123456789ab"


def test_signed_urls_open_until_they_expire():
    signer = UrlSigner(b"secret", ttl_s=600)
    url = signer.sign("/v1/images/abc/0.png", now=1000)
    path, query = url.split("?")
    params = dict(part.split("=") for part in query.split("&"))
    assert signer.check(path, int(params["exp"]), params["sig"], now=1500) is None
    assert "expired" in signer.check(path, int(params["exp"]), params["sig"], now=1700)
    assert "does not match" in signer.check("/v1/images/abc/1.png", int(params["exp"]), params["sig"], now=1500)
    assert "does not match" in signer.check(path, int(params["exp"]) + 10, params["sig"], now=1500)
    assert "not signed" in signer.check(path, None, None)
    assert "does not match" in signer.check(path, int(params["exp"]), "\x00\u00e9 not hex", now=1500)


def test_webhook_signature_is_standard_webhooks_hmac():
    body = b'{"id": "x"}'
    headers = signed_headers("whsec-test", "job-1", body, timestamp=1700000000)
    expected = hmac.new(b"whsec-test", b"job-1.1700000000." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert headers["webhook-id"] == "job-1" and headers["webhook-timestamp"] == "1700000000"


class FlakyReceiver(BaseHTTPRequestHandler):
    """Answers 500 to the first two POSTs, then 204; remembers what it got."""

    received: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        FlakyReceiver.received.append((dict(self.headers), body))
        self.send_response(500 if len(FlakyReceiver.received) <= 2 else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_retried_with_backoff_and_attempts_recorded():
    server = HTTPServer(("127.0.0.1", 0), FlakyReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    attempts: list[dict] = []

    async def record(attempt):
        attempts.append(attempt)

    url = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        delivered = asyncio.run(
            deliver(url, {"id": "j"}, "secret-123", "j", 5, 0.01, 5, ["127.0.0.1"], on_attempt=record)
        )
    finally:
        server.shutdown()
    assert delivered
    assert [a["status_code"] for a in attempts] == [500, 500, 204]
    assert json.loads(FlakyReceiver.received[-1][1]) == {"id": "j"}


def test_webhook_to_a_closed_port_gives_up_after_max_attempts():
    attempts: list[dict] = []

    async def record(attempt):
        attempts.append(attempt)

    delivered = asyncio.run(
        deliver("http://127.0.0.1:9/x", {}, None, "j", 3, 0.01, 1, ["127.0.0.1"], on_attempt=record)
    )
    assert not delivered and len(attempts) == 3 and all("error" in a for a in attempts)


def test_limiter_counts_concurrent_jobs_and_submits_per_minute():
    limiter = KeyLimiter(concurrent_jobs=2, requests_per_minute=3, lease_s=100)
    assert limiter.admit("k", "a", now=0) is None
    assert limiter.admit("k", "b", now=1) is None
    busy = limiter.admit("k", "c", now=2)
    assert "2 jobs" in busy["reason"] and busy["retry_after_s"] >= 1
    limiter.release("k", "a")
    assert limiter.admit("k", "c", now=3) is None
    limiter.release("k", "b")
    limiter.release("k", "c")
    over = limiter.admit("k", "d", now=4)
    assert "3 submits" in over["reason"] and over["retry_after_s"] == 57
    assert limiter.admit("other", "e", now=4) is None, "limits are per key"
    assert limiter.admit("k", "d", now=61) is None, "the minute window slides"


def test_limiter_lease_frees_a_slot_whose_owner_died():
    limiter = KeyLimiter(concurrent_jobs=1, requests_per_minute=100, lease_s=10)
    assert limiter.admit("k", "a", now=0) is None
    assert limiter.admit("k", "b", now=5) is not None
    assert limiter.admit("k", "b", now=11) is None


def test_prompt_policy():
    policy = PromptPolicy([r"\bforbidden\b", "bad-?thing"])
    assert "forbidden" in policy.refusal("A FORBIDDEN prompt")
    assert policy.refusal("a badthing") is not None
    assert policy.refusal("a red circle") is None


def test_history_export_to_parquet(tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}").jobs
    for number in range(3):
        params = GenerationParams(
            prompt=f"p{number}", width=64, height=64, steps=4, guidance=None, seed=number, output_format="png"
        )
        db.create(
            JobRecord(
                id=new_job_id(),
                model="flux-2-klein-4b",
                key_id=KEY_ID if number else "ffffffffffff",
                status="Ready",
                created_at=1000.0 + number,
                updated_at=1001.0 + number,
                params=params,
                attempts=1,
                batch={"images": 1, "requests": 1},
                timings_s={"encode": 0.1, "denoise": 0.5, "total": 0.7},
            )
        )
    assert export_history(db, tmp_path / "all.parquet") == 3
    assert export_history(db, tmp_path / "mine.parquet", key_id=KEY_ID) == 2
    table = pq.read_table(tmp_path / "mine.parquet")
    assert table.schema.equals(SCHEMA)
    assert table.column("prompt").to_pylist() == ["p1", "p2"]
    assert table.column("denoise_s").to_pylist() == [0.5, 0.5]


def test_keys_file_holds_hashes_and_reloads_on_change(tmp_path):
    keys_file = tmp_path / "keys"
    write_keys_file(keys_file, [{"hash": hash_key("alpha"), "name": "alice", "created": "2026-01-01"}])
    keys = ApiKeys(set(), str(keys_file))
    assert keys.identify("alpha") and keys.identify("beta") is None
    entries = read_keys_file(keys_file)
    write_keys_file(keys_file, entries + [{"hash": hash_key("beta"), "name": "bob", "created": "2026-01-02"}])
    os.utime(keys_file, (2e9, 2e9))
    assert keys.identify("beta")
    assert "alpha" not in keys_file.read_text() and "beta" not in keys_file.read_text()


@pytest.mark.parametrize("pattern", ["(unclosed"])
def test_bad_moderation_pattern_is_a_config_error(pattern):
    from serve_apps.builder import ConfigError, validate_args

    with pytest.raises(ConfigError, match="args.moderation.blocked_patterns"):
        validate_args({"moderation": {"blocked_patterns": [pattern]}})
