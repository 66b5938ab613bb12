"""The build's copy of a Go job: its module, its Perform found, and the server generated beside.

A `package main` job becomes importable in that copy: the package clause of its root files
reads `package racetrackjob` and its `func main` is renamed `racetrackJobMain` (never called).
The generated server is then its own `main` package that imports the job's root package, for
both conventions alike, and none of its names can clash with the job's. The user's repository
is never changed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from buildpacks.build import BuildFailed, BuildRequest
from buildpacks.golang.signature import Perform, SourceFile, detect, package_files
from buildpacks.golang.wrapper import check_module_path, write_wrapper
from buildpacks.manifest import GolangExtra
from buildpacks.source import copy_job_source, require_file

DEFAULT_MODULE = "racetrack.local/job"
DEFAULT_GO_VERSION = "1.19"  # Debian bookworm's Go, the oldest toolchain a build meets
RENAMED_PACKAGE = "racetrackjob"
RENAMED_MAIN = "racetrackJobMain"
_MODULE_LINE = re.compile(r"^\s*module\s+(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class JobModule:
    root: Path  # the module's directory in the build's copy
    module: str
    perform: Perform


def module_path(gomod_text: str) -> str:
    match = _MODULE_LINE.search(gomod_text)
    if match is None:
        raise BuildFailed("jobtype_extra.gomod: the file has no 'module' line")
    return match.group(1).strip('"')


def prepare(request: BuildRequest, tree: Path) -> JobModule:
    """Copy the job into `tree`, find its Perform (refusing before anything compiles), make a
    `package main` importable, and write the server package; the module to build."""
    extra = request.manifest.extra_as(GolangExtra)
    for warning in copy_job_source(request.source_dir, tree, request.manifest):
        request.progress(f"Warning: {warning}")
    files = package_files(tree)
    perform = detect(files, "the job's directory")
    request.progress(f"Perform in {perform.file}: the {perform.form.value}'s convention")
    module = _module(tree, extra)
    if perform.package == "main":
        renamed = rename_main(files)
        request.progress(
            f"package main: built as package {RENAMED_PACKAGE} ({renamed} files), its func main"
            " is not called; the generated server is the program's main"
        )
    write_wrapper(tree, module, perform.form, request.job, request.version)
    return JobModule(tree, module, perform)


def _module(tree: Path, extra: GolangExtra) -> str:
    """The module path from `jobtype_extra.gomod` (copied to go.mod when it names another
    file); a job without one gets a module of its own."""
    gomod = tree / "go.mod"
    if extra.gomod != "go.mod":
        named = require_file(tree, extra.gomod, "jobtype_extra.gomod")
        shutil.copyfile(named, gomod)
    if not gomod.is_file():
        gomod.write_text(f"module {DEFAULT_MODULE}\n\ngo {DEFAULT_GO_VERSION}\n")
        return DEFAULT_MODULE
    return check_module_path(module_path(gomod.read_text(errors="replace")))


def rename_main(files: list[SourceFile]) -> int:
    """Rewrite each `package main` file: the clause and a top-level `func main`; returns how
    many files changed. Offsets come from the scanner, so comments and strings stay as they
    are."""
    changed = 0
    for source in files:
        package = source.parsed.package
        if package is None or package.text != "main":
            continue
        edits = [(package.start, package.end, RENAMED_PACKAGE)]
        edits += [
            (decl.name.start, decl.name.end, RENAMED_MAIN)
            for decl in source.parsed.funcs
            if decl.name.text == "main" and not decl.receiver
        ]
        text = source.text
        for start, end, replacement in sorted(edits, reverse=True):
            text = text[:start] + replacement + text[end:]
        source.path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        changed += 1
    return changed
