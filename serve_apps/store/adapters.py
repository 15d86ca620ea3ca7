"""LoRA registrations in the database, each owned by the key that registered it (lora/registry.py
decides who may change one; this only keeps them)."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select, update

from serve_apps.store.schema import loras


class AdaptersRepository:
    def __init__(self, engine: Engine):
        self.engine = engine

    def save_lora(self, record: dict) -> None:
        values = {"id": record["id"], "owner_key_id": record.get("owner_key_id"), "record": record}
        with self.engine.begin() as connection:
            if connection.execute(update(loras).where(loras.c.id == record["id"]).values(**values)).rowcount == 0:
                connection.execute(insert(loras).values(**values))

    def load_lora(self, lora_id: str) -> dict | None:
        with self.engine.connect() as connection:
            return connection.execute(select(loras.c.record).where(loras.c.id == lora_id)).scalar_one_or_none()

    def list_loras(self) -> list[dict]:
        with self.engine.connect() as connection:
            return [row.record for row in connection.execute(select(loras.c.record).order_by(loras.c.id))]
