"""JSON for results: whatever a perform method commonly returns."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from pathlib import PurePath
from typing import Any

MAX_DEPTH = 1000


def _default(value: Any) -> Any:
    if hasattr(value, "__to_json__"):
        return value.__to_json__()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, decimal.Decimal | uuid.UUID | PurePath):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, as Racetrack's runner (FastAPI) writes it: NaN and infinities, which
    JSON cannot hold, become null."""
    try:
        text = _dumps(value)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        text = _dumps(_finite(value))
    return text.encode("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":"))  # fmt: skip


def _finite(value: Any, depth: int = 0) -> Any:
    """`value` with non-finite floats as None (walked only when dumping met one)."""
    if depth > MAX_DEPTH:
        raise ValueError("the result nests too deep to be JSON")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_finite(v, depth + 1) for v in value]
    converted = _default(value) if not isinstance(value, str | int | bool | type(None)) else value
    if converted is value:
        return value
    return _finite(converted, depth + 1)
