"""What both python3 targets (directory and image) share: source checks and the wrapper's env."""

from __future__ import annotations

import shutil
from pathlib import Path

import swagger_ui_bundle

from buildpacks.build import Progress
from buildpacks.manifest import Python3Extra
from buildpacks.source import require_file

WRAPPER_PACKAGE = Path(__file__).parent / "racetrack_job_wrapper"
# Swagger UI for the job's /docs page, bundled into every artifact: nothing is fetched at run time
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
SWAGGER_UI_SOURCE = Path(str(swagger_ui_bundle.swagger_ui_path))


def copy_wrapper(dest_dir: Path) -> Path:
    """Copy racetrack_job_wrapper, with the Swagger UI assets it serves, into `dest_dir`."""
    package = dest_dir / WRAPPER_PACKAGE.name
    shutil.copytree(WRAPPER_PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    assets = package / "swagger_ui"
    assets.mkdir()
    for name in SWAGGER_UI_FILES:
        shutil.copyfile(SWAGGER_UI_SOURCE / name, assets / name)
    return package


def check_source(source: Path, extra: Python3Extra, progress: Progress) -> Path | None:
    """Fail early on a missing entrypoint; return the requirements file, if one is set."""
    require_file(source, extra.entrypoint_path, "jobtype_extra.entrypoint_path")
    if extra.requirements_path is None:
        if (source / "requirements.txt").is_file():
            progress(
                "Note: requirements.txt is not installed because "
                "jobtype_extra.requirements_path is not set"
            )
        return None
    return require_file(source, extra.requirements_path, "jobtype_extra.requirements_path")


def wrapper_env(extra: Python3Extra, *, job_dir: str, wrapper_dir: str) -> dict[str, str]:
    """How racetrack_job_wrapper finds the job's class."""
    return {
        "PYTHONPATH": wrapper_dir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "JOB_DIR": job_dir,
        "ENTRYPOINT_PATH": extra.entrypoint_path,
        "ENTRYPOINT_CLASS": extra.entrypoint_class or "",
        "MAX_CONCURRENCY": "" if extra.max_concurrency is None else str(extra.max_concurrency),
        "MAX_CONCURRENCY_QUEUE": (
            "" if extra.max_concurrency_queue is None else str(extra.max_concurrency_queue)
        ),
        "HOME_PAGE": extra.home_page,
    }
