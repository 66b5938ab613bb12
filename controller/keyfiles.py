"""The platform's secret files in the data dir: the SSH host key, the token key and the key
that seals secrets in the store.

Each is created once, readable by the platform's user only from the first byte on, and kept so
that clients can keep trusting the host and tokens stay valid across restarts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import asyncssh

from controller.errors import StartupError

HOST_KEY_NAME = "ssh_host_ed25519_key"
TOKEN_KEY_NAME = "token.key"
BUILD_SECRETS_KEY_NAME = "build-secrets.key"
SECRETS_KEY_NAME = "secrets.key"
KEY_BYTES = 32


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never group- or world-readable, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_or_create_host_key(data_dir: Path) -> asyncssh.SSHKey:
    path = data_dir / HOST_KEY_NAME
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="racetrack")
        write_secret_file(path, key.export_private_key())
        path.with_suffix(".pub").write_bytes(key.export_public_key())
        return key
    try:
        return asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError) as exc:
        raise StartupError(
            f"SSH host key {path} is unusable ({exc}); restore or remove it"
        ) from None


def load_or_create_key(data_dir: Path, name: str, consequence: str) -> bytes:
    """A random 32-byte key kept in the data dir; `consequence` says what losing it breaks."""
    path = data_dir / name
    if not path.exists():
        write_secret_file(path, secrets.token_bytes(KEY_BYTES))
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise StartupError(
            f"{path} holds {len(key)} bytes, not {KEY_BYTES}; restore it"
            f" (removing it {consequence})"
        )
    return key


def load_or_create_token_key(data_dir: Path) -> bytes:
    return load_or_create_key(data_dir, TOKEN_KEY_NAME, "invalidates every API token")


def load_or_create_secrets_key(data_dir: Path, path: Path | None = None) -> bytes:
    """The key that seals config and secret values in the store: `secrets.key` beside
    token.key, or `path` (--secrets-key-file, e.g. on another volume than the database). It
    must be readable by the platform's user only."""
    if path is None:
        return load_or_create_key(
            data_dir, SECRETS_KEY_NAME, "makes every stored secret unreadable"
        )
    if not path.exists():
        try:
            write_secret_file(path, secrets.token_bytes(KEY_BYTES))
        except OSError as exc:
            raise StartupError(f"--secrets-key-file {path}: cannot create it ({exc})") from None
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except OSError as exc:
        raise StartupError(f"--secrets-key-file {path}: cannot read it ({exc})") from None
    if mode & 0o077:
        raise StartupError(
            f"--secrets-key-file {path} can be read by other users (mode {mode & 0o777:04o});"
            f" chmod 600 {path}"
        )
    if len(key) != KEY_BYTES:
        raise StartupError(f"--secrets-key-file {path} holds {len(key)} bytes, not {KEY_BYTES}")
    return key


def load_or_create_build_secrets_key(data_dir: Path) -> bytes:
    return load_or_create_key(
        data_dir, BUILD_SECRETS_KEY_NAME, "makes the next builds with secrets miss their cache"
    )
