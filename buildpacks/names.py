"""Names derived from a job's name for what only takes a narrower alphabet.

Job names are Racetrack's: letters of either case, digits, '-', '_' and '.', 1-63 characters,
starting with a letter or digit, never `..`. Docker image repositories take lowercase only, and
Kubernetes objects, containers and hostnames DNS-1123 labels. `safe_name` is the one mapping
every runtime and buildpack uses: a name that is already valid is kept as it is; any other is
lowercased, its other characters become '-', and a short hash of the original is appended, so
that two job names never map to one resource name (`My_Job` and `my-job` stay apart).
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63  # a DNS-1123 label
_UNSAFE = re.compile(r"[^a-z0-9-]+")
_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_HASH_LENGTH = 8


def safe_name(text: str, limit: int = MAX_NAME) -> str:
    """`text` as a DNS-1123 label of at most `limit` characters. Text that is already one is
    kept as it is; any change, and any shortening, appends a hash of the original, so that
    two different texts never share a name."""
    if _LABEL.fullmatch(text) and len(text) <= limit:
        return text
    cleaned = _UNSAFE.sub("-", text.lower()).strip("-") or "x"
    if not cleaned[0].isalpha():
        cleaned = f"x-{cleaned}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]
    return f"{cleaned[: limit - _HASH_LENGTH - 1].rstrip('-')}-{digest}"
