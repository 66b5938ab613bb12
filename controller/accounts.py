"""Users, their SSH keys and their API tokens."""

from __future__ import annotations

import re
from pathlib import Path

import asyncssh

from controller.permissions import Principal
from controller.store import Release, Store, Token, User
from controller.tokens import TokenMinter, hash_token
from router.auth import AUTH_HEADER


class NotAuthenticated(Exception):
    """No token, or a token nobody owns; the message says which."""


class BadPublicKey(ValueError):
    """A public key that cannot be used; the message names the problem."""


def read_public_key(text: str, source: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadPublicKey(f"{source}: not an OpenSSH public key ({exc})") from None


def name_from_comment(comment: str | None) -> str:
    """`alice@laptop` → `alice`; anything unusable → `admin`."""
    local = (comment or "").split("@", 1)[0].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", local).strip("-")[:32]
    return name if name and name[0].isalpha() else "admin"


def principal_of(user: User) -> Principal:
    return Principal("user", user.name, user.is_admin)


class Accounts:
    def __init__(self, store: Store, minter: TokenMinter) -> None:
        self._store = store
        self._minter = minter

    def _user_subject(self, user: User) -> str:
        return f"user:{user.id}"

    def token_for(self, user: User) -> str:
        return self._minter.token_for(self._user_subject(user), user.token_generation)

    def _row_token(self, token: Token) -> str:
        return self._minter.token_for(f"token:{token.id}", 1)

    def authenticate(self, token: str | None) -> Principal:
        """Who an API token belongs to; raises NotAuthenticated naming what is wrong."""
        if not token:
            raise NotAuthenticated(
                f"missing {AUTH_HEADER} header (get your token: ssh -p PORT git@HOST auth:token)"
            )
        token_hash = hash_token(token)
        user = self._store.user_by_token_hash(token_hash)
        if user is not None:
            return principal_of(user)
        row = self._store.token_by_hash(token_hash)
        if row is None:
            raise NotAuthenticated(f"invalid {AUTH_HEADER} token")
        kind, _, name = row.subject.partition(":")
        return Principal(kind, name)

    def identify(self, fingerprint: str) -> Principal | None:
        user = self._store.user_by_fingerprint(fingerprint)
        return None if user is None else principal_of(user)

    def create_token(self, subject: str, created_by: str) -> tuple[Token, str]:
        """A new token for `esc:NAME` (shown once) or `family:NAME`."""
        row = self._store.create_token(
            subject,
            created_by,
            lambda token_id: hash_token(self._minter.token_for(f"token:{token_id}", 1)),
        )
        return row, self._row_token(row)

    def family_token(self, family: str) -> str:
        """The job family's own token, injected into its instances as AUTH_TOKEN (job chaining);
        made on first use."""
        subject = f"family:{family}"
        live = [t for t in self._store.tokens(subject) if t.subject == subject and not t.revoked_at]
        if live:
            return self._row_token(live[-1])
        return self.create_token(subject, "racetrack")[1]

    def upstream_key(self, release: Release) -> str:
        """The key the router sends to a release's instances with each call, derived (so the
        same after a restart, never stored) and different for every release."""
        return self._minter.token_for(f"upstream:{release.id}:{release.job}", release.number)

    def create_user(self, name: str, *, is_admin: bool) -> User:
        return self._store.create_user(
            name, is_admin, lambda user: hash_token(self.token_for(user))
        )

    def register_admin_key(self, path: Path) -> User | None:
        """Make the key in `path` an admin's; None when the key is already registered."""
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadPublicKey(f"--admin-key {path}: cannot read it ({exc})") from None
        key = read_public_key(text, f"--admin-key {path}")
        fingerprint = key.get_fingerprint("sha256")
        if self._store.user_by_fingerprint(fingerprint) is not None:
            return None
        comment = key.get_comment()
        base = name_from_comment(comment if isinstance(comment, str) else None)
        name, suffix = base, 1
        while self._store.user_by_name(name) is not None:
            suffix += 1
            name = f"{base}-{suffix}"
        user = self.create_user(name, is_admin=True)
        self._store.add_key(user, fingerprint, key.export_public_key("openssh").decode().strip())
        return user
