"""The connection and what every part of the store shares."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from controller.store.schema import MIGRATIONS


class StoreBase:
    def __init__(self, path: Path) -> None:
        # called after every change to who may do what (grants, tokens, users, keys), so that
        # whoever remembers answers (the router's call authorizer) forgets them at once
        self.auth_listeners: list[Callable[[], None]] = []
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _auth_changed(self) -> None:
        for listener in self.auth_listeners:
            listener()

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            self._db.executescript(
                f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;"
            )

    def _one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        return self._db.execute(sql, tuple(params)).fetchone()

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def _insert(self, sql: str, params: Iterable[Any]) -> int:
        return int(self._db.execute(sql, tuple(params)).lastrowid or 0)

    @contextlib.contextmanager
    def _transaction(self, immediate: bool = False) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
