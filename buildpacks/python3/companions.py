"""Packages that Racetrack's runner environment gives every job, installed here only for a job
that uses what needs them.

Racetrack installs a job's requirements on top of its runner's own (FastAPI, python-multipart,
Jinja2, ...), so its jobs may rely on those without listing them: docs-formatter lists FastAPI
and posts a form, which FastAPI parses only with python-multipart. Our wrapper has no
dependencies, so after a job's requirements are installed, each companion is added when the
package that needs it is installed and the companion is not. Nothing is added otherwise, and a
companion never replaces a version the job installed itself.
"""

from __future__ import annotations

import re
from pathlib import Path

# (installed distribution, the companion it needs, the requirement that installs it)
COMPANIONS = (("fastapi", "python-multipart", "python-multipart>=0.0.9"),)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_companions(installed: set[str]) -> list[str]:
    """The requirements to add for an environment holding the distributions `installed`."""
    names = {normalized(name) for name in installed}
    return [req for uses, companion, req in COMPANIONS if uses in names and companion not in names]


def installed_in(venv: Path) -> set[str]:
    """The distributions installed in `venv`, from its dist-info directories (nothing of the
    job's runs to find them)."""
    return {
        path.name.split("-", 1)[0]
        for path in venv.glob("lib/python*/site-packages/*.dist-info")
        if path.is_dir()
    }


# The same check inside an image build, run by the image's Python: prints one requirement a line.
CHECK_SCRIPT = (
    "import importlib.metadata as m, re; "
    "n = lambda s: re.sub(r'[-_.]+', '-', s).lower(); "
    "have = {n(d.metadata['Name'] or '') for d in m.distributions()}; "
    f"print(*[r for u, c, r in {COMPANIONS!r} if u in have and c not in have], sep='\\n')"
)
