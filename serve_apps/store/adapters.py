"""LoRA registrations in the database, each owned by the key that registered it (lora/registry.py
decides who may change one; this only keeps them)."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from lora.registry import taken
from serve_apps.store.schema import loras


class AdaptersRepository:
    def __init__(self, engine: Engine):
        self.engine = engine

    def save_lora(self, record: dict) -> None:
        """Insert a new id, or update the one `record["owner_key_id"]` owns; an id another key holds
        (registered between the registry's check and this write, say) raises the registry's AdapterError."""
        owner = record.get("owner_key_id")
        values = {"id": record["id"], "owner_key_id": owner, "record": record}
        owned = loras.c.owner_key_id.is_(None) if owner is None else loras.c.owner_key_id == owner
        change = update(loras).where(loras.c.id == record["id"], owned).values(**values)
        try:
            with self.engine.begin() as connection:
                if connection.execute(change).rowcount == 0:
                    connection.execute(insert(loras).values(**values))
        except IntegrityError:  # the id exists: another key's, or this key's own registration at the same moment
            with self.engine.begin() as connection:
                if connection.execute(change).rowcount == 0:
                    raise taken(record["id"]) from None

    def load_lora(self, lora_id: str) -> dict | None:
        with self.engine.connect() as connection:
            return connection.execute(select(loras.c.record).where(loras.c.id == lora_id)).scalar_one_or_none()

    def delete_lora(self, lora_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(loras).where(loras.c.id == lora_id))

    def list_loras(self) -> list[dict]:
        with self.engine.connect() as connection:
            return [row.record for row in connection.execute(select(loras.c.record).order_by(loras.c.id))]
