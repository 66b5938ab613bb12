"""Config and secret values encrypted at rest.

A job's config (`config:set`), its build config and the values of its secret env files are
stored sealed with AES-256-GCM under a key kept outside the database (`secrets.key` beside
`token.key` in the data dir, mode 0600, or wherever `--secrets-key-file` says). Each value is
bound to where it belongs (table, job, key) as associated data, so a sealed value copied into
another row does not open. A copy of the database alone reveals key names, never values.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX = "rtenc1:"
NONCE_BYTES = 12
KEY_BYTES = 32


class UnsealFailed(Exception):
    """A sealed value that this key does not open (another key, or a value moved rows)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the secrets key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, value: str, where: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8", "surrogateescape"), where.encode())
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, where: str) -> str:
        """The value of a sealed one; a value stored before sealing existed is returned as is
        (the store seals those on start)."""
        if not is_sealed(stored):
            return stored
        raw = base64.b64decode(stored[len(SEALED_PREFIX) :])
        try:
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], where.encode())
        except InvalidTag:
            raise UnsealFailed(
                f"a stored secret ({where}) does not open with this secrets key: was the key"
                " replaced? restore the original --secrets-key-file"
            ) from None
        return plain.decode("utf-8", "surrogateescape")


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)
