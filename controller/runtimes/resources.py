"""Kubernetes-style quantities (`512Mi`, `500m`) as numbers a runtime can use."""

from __future__ import annotations

import re
from typing import Any

from buildpacks.manifest import Resources

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)([A-Za-z]*)$")


def memory_bytes(quantity: str) -> int:
    match = _QUANTITY.match(quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a memory quantity")
    number, unit = float(match.group(1)), match.group(2)
    factor = _BINARY.get(unit) or _DECIMAL.get(unit) or (1 if unit == "" else None)
    if factor is None:
        raise ValueError(f"{quantity!r} has an unknown unit {unit!r}")
    return int(number * factor)


def cpu_cores(quantity: str) -> float:
    if quantity.endswith("m"):
        return float(quantity[:-1]) / 1000
    return float(quantity)


def docker_limits(resources: Resources | None) -> dict[str, Any]:
    """memory_max → memory limit, memory_min → reservation, cpu_max → NanoCPUs,
    cpu_min → CPU shares (1024 per core, Docker's default weight for one container)."""
    if resources is None:
        return {}
    limits: dict[str, Any] = {}
    if resources.memory_max:
        limits["mem_limit"] = memory_bytes(resources.memory_max)
    if resources.memory_min:
        limits["mem_reservation"] = memory_bytes(resources.memory_min)
    if resources.cpu_max:
        limits["nano_cpus"] = int(cpu_cores(resources.cpu_max) * 1e9)
    if resources.cpu_min:
        limits["cpu_shares"] = max(2, int(cpu_cores(resources.cpu_min) * 1024))
    return limits
