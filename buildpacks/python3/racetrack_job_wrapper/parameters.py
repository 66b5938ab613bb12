"""`GET /api/v1/parameters`: the arguments `perform` takes, in Racetrack's runner's format.

Required arguments first (`{"name", "type"}`), then optional ones with `default_value`; a type
is its annotation's name (`float`) or, for generics, its text (`typing.List[float]`). The
format, quirks included (no `*args` entry when there are no required arguments), is theirs:
clients written for Racetrack read it.
"""

from __future__ import annotations

import inspect
from typing import Any


def perform_parameters(perform: Any) -> list[dict[str, Any]]:
    spec = inspect.getfullargspec(perform)
    annotations = spec.annotations
    positional = list(spec.args)
    defaults = list(spec.defaults or ())
    required_count = len(positional) - len(defaults)
    required = positional[:required_count]
    optional = positional[required_count:]
    lists_varargs = bool(required)  # `self` counts here, as in theirs
    if required and required[0] == "self":
        required = required[1:]
    found: list[dict[str, Any]] = [
        {"name": name, "type": _type_name(annotations, name)} for name in required
    ]
    if lists_varargs and spec.varargs is not None:
        item = _type_name(annotations, spec.varargs)
        found.append({"name": spec.varargs, "type": f"List[{item}]"})
    for name, default in zip(optional, defaults, strict=True):
        found.append({"name": name, "default_value": default,
                      "type": _type_name(annotations, name)})  # fmt: skip
    keyword_defaults = spec.kwonlydefaults or {}
    for name in spec.kwonlyargs:
        found.append({"name": name, "default_value": keyword_defaults.get(name),
                      "type": _type_name(annotations, name)})  # fmt: skip
    return found


def _type_name(annotations: dict[str, Any], name: str) -> str | None:
    annotation = annotations.get(name)
    if annotation is None:
        return None
    return getattr(annotation, "__name__", None) or str(annotation)
