"""API keys in the database: hashes and roles, looked up on every request so a revocation reaches
every replica at once (`flux-serve keys create|list|revoke`)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, delete, func, insert, select

from serve_apps.store.schema import api_keys


class KeysRepository:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add_key(self, key_hash: str, name: str, role: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(insert(api_keys).values(hash=key_hash, name=name, role=role, created_at=time.time()))

    def key_role(self, key_hash: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(select(api_keys.c.role).where(api_keys.c.hash == key_hash)).scalar_one_or_none()

    def has_keys(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(api_keys)).scalar_one() > 0

    def list_keys(self) -> list[dict]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [row._asdict() for row in rows]

    def revoke_key(self, hash_prefix_or_name: str) -> int:
        """Delete keys by id (the hash's first 12 characters) or by name; how many went."""
        condition = (api_keys.c.name == hash_prefix_or_name) | (
            func.substr(api_keys.c.hash, 1, 12) == hash_prefix_or_name
        )
        with self.engine.begin() as connection:
            return connection.execute(delete(api_keys).where(condition)).rowcount
