"""The attack table (bench/attacks.py) sent over real HTTP to the shared Ray Serve instance.

Each attack must get its answer (status, a message that teaches, no leaked internals) in time and
without growing the ingress's memory; meanwhile another key's normal jobs end Ready and `/ping`
answers within a second. A loopback server (bench/bombs.py) serves the bombs; the test
configuration lets the service reach 127.0.0.1, as every serve test's does.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from bench.attacks import ATTACKS, QUICK_JOB, Attack, Target, replay, wait_ready
from bench.bombs import BombServer
from tests.serve.conftest import API_KEY, SECOND_KEY

pytestmark = pytest.mark.adversarial
MAX_INGRESS_GROWTH_BYTES = 100 * 2**20
MAX_PING_S = 1.0


class Bystander:
    """Another key going about its business during the attacks: pings, and one quick job after another."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.ping_s: list[float] = []
        self.job_statuses: list[str] = []
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self.ping, daemon=True),
            threading.Thread(target=self.work, daemon=True),
        ]

    def ping(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self.stopping.is_set():
                started = time.perf_counter()
                assert http.get("/ping").status_code == 200
                self.ping_s.append(time.perf_counter() - started)
                time.sleep(0.25)

    def work(self) -> None:
        with httpx.Client(base_url=self.base_url, headers={"x-key": SECOND_KEY}, timeout=60) as http:
            while not self.stopping.is_set():
                submitted = http.post("/v1/flux-2-klein-4b", json={**QUICK_JOB, "prompt": "a green square"})
                assert submitted.status_code == 200, submitted.text
                self.job_statuses.append(wait_ready(http, submitted.json()["id"])["status"])

    def __enter__(self) -> Bystander:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=180)


@pytest.fixture(scope="module")
def target(base_url):
    with BombServer() as bombs:
        yield Target(base_url, API_KEY, bombs)


@pytest.fixture(scope="module")
def bystander(base_url):
    with Bystander(base_url) as watching:
        yield watching


@pytest.mark.parametrize("attack", ATTACKS, ids=[attack.name for attack in ATTACKS])
def test_the_attack_gets_its_answer_in_time_and_memory(attack: Attack, target, bystander):
    outcome = replay(attack, target)
    answer = outcome.answer
    assert answer.status in attack.statuses, f"{attack.what}: {answer.status} {answer.text[:300]}"
    assert answer.elapsed_s <= attack.max_s, f"{attack.what}: answered in {answer.elapsed_s:.1f} s"
    assert attack.says in answer.text, f"{attack.what}: the answer should say {attack.says!r}: {answer.text[:300]}"
    for leak in attack.never_says:
        assert leak not in answer.text, f"{attack.what}: the answer leaks {leak!r}"
    assert outcome.ingress_growth_bytes <= MAX_INGRESS_GROWTH_BYTES, (
        f"{attack.what}: the ingress grew by {outcome.ingress_growth_bytes / 2**20:.0f} MiB"
    )


def test_another_keys_jobs_end_ready_and_ping_stays_quick_throughout(bystander):
    """Runs after every attack above (same module, same bystander)."""
    time.sleep(1.0)
    assert bystander.job_statuses, "the bystander's first job never ended"
    assert set(bystander.job_statuses) == {"Ready"}, bystander.job_statuses
    assert max(bystander.ping_s) < MAX_PING_S, f"/ping took up to {max(bystander.ping_s):.2f} s"
