"""The one place where the names of what runtimes create are made.

Every runtime names a release's objects (processes, containers, Deployments, Services, Secrets)
with `release_name`, and its replicas with `replica_name`: DNS-1123 labels (lowercase letters,
digits and '-', starting with a letter, at most 63 characters), valid as a container name, a
hostname, a Kubernetes object name and a Service name alike.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63  # a DNS-1123 label
_SIMPLE_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UNSAFE = re.compile(r"[^a-z0-9-]+")
_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_HASH_LENGTH = 8
# room kept for the replica suffix (`-<index>`) after a release's name
_REPLICA_ROOM = 5


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


def release_name(job: str, version: str, number: int) -> str:
    """`rt-<job>-<version>-r<number>`: the name of everything that runs release `number` of
    `job` `version`. Job names are DNS-1123 already; a version of digits and dots keeps its
    digits (`1.0.0` → `1-0-0`: a semantic version has exactly three of them, so nothing is
    ambiguous), anything else in it is hashed in."""
    if _SIMPLE_VERSION.fullmatch(version):
        shown = version.replace(".", "-")
        name = f"rt-{job}-{shown}-r{number}"
        if len(name) <= MAX_NAME - _REPLICA_ROOM:
            return name
    return safe_name(f"rt-{job}-{version}-r{number}", MAX_NAME - _REPLICA_ROOM)


def replica_name(release: str, index: int) -> str:
    """`<release name>-<index>`: one replica of a release, on runtimes that name replicas."""
    return f"{release}-{index}"
