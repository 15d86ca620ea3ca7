"""A finetune's adapter is private to its key: listed and usable by it alone, as if absent for others."""

from __future__ import annotations

import pytest

from lora.registry import AdapterError, AdapterRegistry

MODEL = "flux-2-klein-4b"


class Records:
    def __init__(self, *records: dict):
        self.records = {record["id"]: record for record in records}

    def load_lora(self, lora_id: str) -> dict | None:
        return self.records.get(lora_id)

    def list_loras(self) -> list[dict]:
        return list(self.records.values())


def record(adapter_id: str, owner: str, private: bool) -> dict:
    return {"id": adapter_id, "owner_key_id": owner, "private": private, "fits": [MODEL], "refusals": {}, "tags": []}


@pytest.fixture
def registry() -> AdapterRegistry:
    store = Records(record("shared", "alice", False), record("finetune", "alice", True))
    return AdapterRegistry(store, lambda: {}, sources=None)


def test_a_private_adapter_is_listed_and_resolved_for_its_owner_only(registry):
    assert [r["id"] for r in registry.registered("alice")] == ["shared", "finetune"]
    assert [r["id"] for r in registry.registered("bob")] == ["shared"]
    assert [r["id"] for r in registry.resolve(MODEL, [("finetune", 1.0)], "alice")] == ["finetune"]
    with pytest.raises(AdapterError, match="No LoRA 'finetune' is registered"):
        registry.resolve(MODEL, [("finetune", 1.0)], "bob")
    assert [r["id"] for r in registry.resolve(MODEL, [("shared", 1.0)], "bob")] == ["shared"]
