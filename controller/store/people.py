"""Users, their SSH keys, External Service Consumers and their tokens."""

from __future__ import annotations

from collections.abc import Callable

from controller.store.base import StoreBase
from controller.store.records import Esc, SshKey, Token, User, now, record_of, user_of


class PeopleStore(StoreBase):
    def create_user(self, name: str, is_admin: bool, token_hash_for: Callable[[User], str]) -> User:
        """Create a user and store the hash of its first token, in one transaction. Ids are never
        reused (tokens derive from them), not even those of removed users."""
        with self._transaction():
            user_id = self._insert(
                "INSERT INTO users (id, name, is_admin, created_at) VALUES ((SELECT 1 + MAX(id)"
                " FROM (SELECT 0 AS id UNION ALL SELECT id FROM users"
                " UNION ALL SELECT id FROM removed_users)), ?, ?, ?)",
                (name, int(is_admin), now()),
            )
            user = self.user_by_id(user_id)
            assert user is not None
            self._db.execute(
                "UPDATE users SET token_hash = ? WHERE id = ?", (token_hash_for(user), user.id)
            )
        return user

    def remove_user(self, user: User, heir: str) -> list[str]:
        """Remove the user with their keys and grants; the families they own go to `heir`, so
        that a later user of the same name inherits nothing. Returns those families."""
        with self._transaction(immediate=True):
            self._db.execute("DELETE FROM users WHERE id = ?", (user.id,))  # keys go with it
            self._db.execute(
                "INSERT INTO removed_users (id, name, removed_at) VALUES (?, ?, ?)",
                (user.id, user.name, now()),
            )
            self._db.execute("DELETE FROM permissions WHERE subject = ?", (f"user:{user.name}",))
            families = [
                row["name"]
                for row in self._all(
                    "SELECT name FROM families WHERE owner = ? ORDER BY name", (user.name,)
                )
            ]
            self._db.execute("UPDATE families SET owner = ? WHERE owner = ?", (heir, user.name))
        self._auth_changed()
        return families

    def users(self) -> list[User]:
        return [user_of(r) for r in self._all("SELECT * FROM users ORDER BY name")]

    def user_by_id(self, user_id: int) -> User | None:
        row = self._one("SELECT * FROM users WHERE id = ?", (user_id,))
        return user_of(row) if row else None

    def user_by_name(self, name: str) -> User | None:
        row = self._one("SELECT * FROM users WHERE name = ?", (name,))
        return user_of(row) if row else None

    def user_by_token_hash(self, token_hash: str) -> User | None:
        row = self._one("SELECT * FROM users WHERE token_hash = ?", (token_hash,))
        return user_of(row) if row else None

    def user_by_fingerprint(self, fingerprint: str) -> User | None:
        row = self._one(
            "SELECT users.* FROM users JOIN ssh_keys ON ssh_keys.user_id = users.id"
            " WHERE ssh_keys.fingerprint = ?",
            (fingerprint,),
        )
        return user_of(row) if row else None

    def admins(self) -> list[User]:
        return [u for u in self.users() if u.is_admin]

    # keys

    def add_key(self, user: User, fingerprint: str, public_key: str) -> None:
        self._db.execute(
            "INSERT INTO ssh_keys (user_id, fingerprint, public_key, created_at)"
            " VALUES (?, ?, ?, ?)",
            (user.id, fingerprint, public_key, now()),
        )

    def keys(self, user: User | None = None) -> list[SshKey]:
        sql = (
            "SELECT ssh_keys.*, users.name AS user_name FROM ssh_keys"
            " JOIN users ON users.id = ssh_keys.user_id"
        )
        params: tuple[object, ...] = ()
        if user is not None:
            sql += " WHERE users.id = ?"
            params = (user.id,)
        rows = self._all(sql + " ORDER BY users.name, ssh_keys.id", params)
        return [
            SshKey(r["id"], r["user_name"], r["fingerprint"], r["public_key"], r["created_at"])
            for r in rows
        ]

    def key_by_fingerprint(self, fingerprint: str) -> SshKey | None:
        return next((k for k in self.keys() if k.fingerprint == fingerprint), None)

    def remove_key(self, fingerprint: str) -> None:
        self._db.execute("DELETE FROM ssh_keys WHERE fingerprint = ?", (fingerprint,))
        self._auth_changed()

    # External Service Consumers and subject tokens (esc:NAME, family:NAME)

    def esc_by_name(self, name: str) -> Esc | None:
        row = self._one("SELECT * FROM escs WHERE name = ?", (name,))
        return record_of(Esc, row) if row else None

    def ensure_esc(self, name: str, created_by: str) -> Esc:
        if self.esc_by_name(name) is None:
            self._insert(
                "INSERT INTO escs (name, created_by, created_at) VALUES (?, ?, ?)",
                (name, created_by, now()),
            )
        esc = self.esc_by_name(name)
        assert esc is not None
        return esc

    def create_token(
        self, subject: str, created_by: str, token_hash_for: Callable[[int], str]
    ) -> Token:
        """A token row, hashed with `token_hash_for(row id)`, in one transaction."""
        with self._transaction():
            token_id = self._insert(
                "INSERT INTO tokens (subject, created_by, created_at) VALUES (?, ?, ?)",
                (subject, created_by, now()),
            )
            self._db.execute(
                "UPDATE tokens SET token_hash = ? WHERE id = ?",
                (token_hash_for(token_id), token_id),
            )
        token = self.token_by_id(token_id)
        assert token is not None
        return token

    def token_by_id(self, token_id: int) -> Token | None:
        row = self._one(
            "SELECT id, subject, created_by, created_at, revoked_at FROM tokens WHERE id = ?",
            (token_id,),
        )
        return record_of(Token, row) if row else None

    def token_by_hash(self, token_hash: str) -> Token | None:
        row = self._one(
            "SELECT id, subject, created_by, created_at, revoked_at FROM tokens"
            " WHERE token_hash = ? AND revoked_at IS NULL",
            (token_hash,),
        )
        return record_of(Token, row) if row else None

    def tokens(self, subject_prefix: str = "") -> list[Token]:
        rows = self._all(
            "SELECT id, subject, created_by, created_at, revoked_at FROM tokens ORDER BY id"
        )
        return [record_of(Token, r) for r in rows if r["subject"].startswith(subject_prefix)]

    def revoke_token(self, token: Token) -> None:
        self._db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (now(), token.id))
        self._auth_changed()
