"""The connection and what every part of the store shares."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from controller.store.schema import MIGRATIONS
from controller.store.sealing import SecretBox, is_sealed

CONFIG_TABLES = ("job_config", "job_build_config")
RELEASE_SECRET_COLUMNS = ("config", "secret_env")


def config_place(table: str, job: str, key: str) -> str:
    """Where a config value belongs: what it is sealed to."""
    return f"{table}:{job}:{key}"


def release_place(column: str, job: str) -> str:
    return f"releases.{column}:{job}"


class StoreBase:
    def __init__(self, path: Path, *, secrets: SecretBox) -> None:
        # called after every change to who may do what (grants, tokens, users, keys), so that
        # whoever remembers answers (the router's call authorizer) forgets them at once
        self.auth_listeners: list[Callable[[], None]] = []
        self._secrets = secrets
        if not path.exists():  # the platform's alone from the first byte (WAL files follow it)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        # what is deleted or overwritten is zeroed, not left in free pages (old plaintext too)
        self._db.execute("PRAGMA secure_delete=ON")
        for suffix in ("", "-wal", "-shm"):  # made by an older version with the umask's mode
            owned = path.with_name(path.name + suffix)
            if owned.exists():
                owned.chmod(0o600)
        self._migrate()
        self._seal_plaintext()

    def close(self) -> None:
        self._db.close()

    def _seal(self, value: str, where: str) -> str:
        return self._secrets.seal(value, where)

    def _open(self, stored: str, where: str) -> str:
        return self._secrets.open(stored, where)

    def _seal_plaintext(self) -> None:
        """Values stored before sealing existed are sealed now, in one transaction; the old
        text is then gone from the database and its write-ahead log too."""
        before = self._db.total_changes
        with self._transaction(immediate=True):
            for table in CONFIG_TABLES:
                for row in self._all(f"SELECT job, key, value FROM {table}"):
                    job, key = row["job"], row["key"]
                    if not is_sealed(row["value"]):
                        sealed = self._seal(row["value"], config_place(table, job, key))
                        self._db.execute(
                            f"UPDATE {table} SET value = ? WHERE job = ? AND key = ?",
                            (sealed, job, key),
                        )
            for row in self._all("SELECT id, job, config, secret_env FROM releases"):
                for column in RELEASE_SECRET_COLUMNS:
                    if not is_sealed(row[column]):
                        sealed = self._seal(row[column], release_place(column, row["job"]))
                        self._db.execute(
                            f"UPDATE releases SET {column} = ? WHERE id = ?", (sealed, row["id"])
                        )
        if self._db.total_changes != before:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
