"""Loading the job's entrypoint class from its module file."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any


class InitError(Exception):
    """The entrypoint could not be loaded; the message is shown to the pusher."""


def _module_name(job_dir: Path, path: Path) -> str:
    """`models/adder.py` becomes `models.adder` when every part is an identifier."""
    parts = list(path.relative_to(job_dir).with_suffix("").parts)
    if all(part.isidentifier() for part in parts):
        return ".".join(parts)
    return "job_entrypoint"


def load_entrypoint(job_dir: Path, entrypoint_path: str, class_name: str | None) -> Any:
    """Import the module, pick the class, instantiate it once without arguments."""
    path = (job_dir / entrypoint_path).resolve()
    if not path.is_file():
        raise InitError(f"entrypoint_path {entrypoint_path!r} is not a file")
    for directory in (str(path.parent), str(job_dir)):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    name = _module_name(job_dir.resolve(), path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InitError(f"cannot import {entrypoint_path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    if class_name:
        cls = getattr(module, class_name, None)
        if not inspect.isclass(cls):
            raise InitError(f"{entrypoint_path} has no class {class_name!r}")
    else:
        classes = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and obj.__module__ == module.__name__
        ]
        if len(classes) != 1:
            found = ", ".join(sorted(c.__name__ for c in classes)) or "none"
            raise InitError(
                f"{entrypoint_path} must define exactly one class, or name it in "
                f"jobtype_extra.entrypoint_class (classes found: {found})"
            )
        cls = classes[0]
    # no perform is no error here, as in Racetrack: a webview-only or auxiliary-only job loads,
    # and only a call to /api/v1/perform is refused (see job_api.missing_perform)
    return cls()
