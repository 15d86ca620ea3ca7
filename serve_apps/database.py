"""Old names of the database, kept only for the modules that have not moved to `serve_apps.db` yet
(serve_apps/cli.py, serve_apps/config.py, tests/serve/test_loras.py). New code imports serve_apps.db."""

from __future__ import annotations

from serve_apps.db import Database, default_database_url


class JobDatabase(Database):
    """`JobDatabase(url)` with the repositories' methods on it (`db.add_key`, `db.all_jobs`, ...):
    each name is looked up on the jobs, keys and adapters repositories in turn."""

    def __init__(self, url: str):
        opened = Database.open(url)
        super().__init__(opened.engine, opened.jobs, opened.keys, opened.adapters)

    def __getattr__(self, name: str):
        for repository in (self.jobs, self.keys, self.adapters):
            if hasattr(repository, name):
                return getattr(repository, name)
        raise AttributeError(f"{type(self).__name__} has no {name!r}; see serve_apps.db's repositories")


__all__ = ["JobDatabase", "default_database_url"]
