"""The one place where the names of what runtimes create are made.

Every runtime names a release's objects (processes, containers, Deployments, Services, Secrets)
with `release_name`, and its replicas with `replica_name`: DNS-1123 labels (lowercase letters,
digits and '-', starting with a letter, at most 63 characters), valid as a container name, a
hostname, a Kubernetes object name and a Service name alike.
"""

from __future__ import annotations

import re

from buildpacks.names import MAX_NAME, safe_name

__all__ = ["MAX_NAME", "release_name", "replica_name", "safe_name"]

_SIMPLE_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DNS_JOB = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
# room kept for the replica suffix (`-<index>`) after a release's name
_REPLICA_ROOM = 5


def release_name(job: str, version: str, number: int) -> str:
    """`rt-<job>-<version>-r<number>`: the name of everything that runs release `number` of
    `job` `version`. A lowercase job name and a version of digits and dots are kept
    (`1.0.0` → `1-0-0`: a semantic version has exactly three numbers, so nothing is ambiguous);
    anything else (capitals, '_', '.', a pre-release) goes through `safe_name`, hashed in."""
    if _SIMPLE_VERSION.fullmatch(version) and _DNS_JOB.fullmatch(job):
        shown = version.replace(".", "-")
        name = f"rt-{job}-{shown}-r{number}"
        if len(name) <= MAX_NAME - _REPLICA_ROOM:
            return name
    return safe_name(f"rt-{job}-{version}-r{number}", MAX_NAME - _REPLICA_ROOM)


def replica_name(release: str, index: int) -> str:
    """`<release name>-<index>`: one replica of a release, on runtimes that name replicas."""
    return f"{release}-{index}"
