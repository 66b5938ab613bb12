"""Names derived from a job's name for what only takes a narrower alphabet.

Job names are Racetrack's: letters of either case, digits, '-', '_' and '.', 1-63 characters,
starting with a letter or digit, never `..`. Docker image repositories take lowercase only, and
Kubernetes objects, containers and hostnames DNS-1123 labels. `safe_name` is the one mapping
every runtime and buildpack uses: a name that is already valid is kept as it is; any other is
lowercased, its other characters become '-', and `--` and a hash of the original are appended,
so that two job names never map to one resource name (`My_Job` and `my-job` stay apart).
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63  # a DNS-1123 label
_UNSAFE = re.compile(r"[^a-z0-9-]+")
_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_HASH_LENGTH = 16  # 64 bits: no one finds a second name for a given job's resources
_HASH_SEPARATOR = "--"  # only a hashed name has it: a name kept as it is never does


def safe_name(text: str, limit: int = MAX_NAME) -> str:
    """`text` as a DNS-1123 label of at most `limit` characters. Text that is already one
    (and has no `--`) is kept as it is; any other is cleaned and gets `--<hash of the
    original>`, so that two different texts never share a name: kept names never contain
    `--`, hashed ones always do."""
    if _LABEL.fullmatch(text) and len(text) <= limit and _HASH_SEPARATOR not in text:
        return text
    cleaned = _UNSAFE.sub("-", text.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-") or "x"
    if not cleaned[0].isalpha():
        cleaned = f"x-{cleaned}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]
    room = limit - _HASH_LENGTH - len(_HASH_SEPARATOR)
    return f"{cleaned[:room].rstrip('-')}{_HASH_SEPARATOR}{digest}"
