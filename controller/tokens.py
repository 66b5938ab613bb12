"""API tokens: derived from a server key, stored only as hashes.

A token is an HMAC of its subject (`user:7`) and a generation number under a key kept in the data
dir, outside the database. The store holds only SHA-256 hashes, so a leaked database does not leak
tokens, while `auth:token` can still show a user their own token again; rotating a token is
bumping its generation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

TOKEN_PREFIX = "rt_"


class TokenMinter:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("token key must be at least 32 bytes")
        self._key = key

    def token_for(self, subject: str, generation: int) -> str:
        digest = hmac.new(self._key, f"{subject}:{generation}".encode(), hashlib.sha256).digest()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
