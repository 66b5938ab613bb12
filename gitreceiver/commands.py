"""Strict parsing of the command an SSH client asks to execute.

`git-receive-pack '<job>'` and `git-upload-pack '<job>'` are git; anything else is an admin
command whose words are handed to the controller. Nothing here touches the disk or a shell.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# The same rule as job.yaml's `name` (buildpacks.manifest); kept here because the receiver must
# refuse a bad repository name before it touches the disk, and leaves do not import each other.
# Racetrack's job names: letters (either case), digits, '-', '_' and '.', starting with a letter
# or digit, 1-63 characters; never `..`, never ending in `.git` (that is the repository's suffix)
JOB_NAME_RE = re.compile(r"^(?!.*\.\.)(?!.*\.git$)[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
JOB_NAME_RULE = (
    "letters, digits, '-', '_' and '.', 1-63 characters, starting with a letter or digit,"
    " without '..'"
)
GIT_SERVICES = ("git-receive-pack", "git-upload-pack")
MAX_COMMAND_LENGTH = 4096


class CommandError(Exception):
    """The exec command cannot be run; the message says why, in one line."""


@dataclass(frozen=True)
class GitCommand:
    service: str  # one of GIT_SERVICES
    job: str


@dataclass(frozen=True)
class AdminCommand:
    argv: tuple[str, ...]


def job_from_repo_path(path: str) -> str:
    """`/adder.git`, `adder.git`, `/adder` and `adder` all name the job `adder`."""
    name = path[1:] if path.startswith("/") else path
    if name.endswith(".git"):
        name = name[: -len(".git")]
    if not JOB_NAME_RE.fullmatch(name):
        raise CommandError(f"{path!r} is not a job repository: names are {JOB_NAME_RULE}")
    return name


def parse_exec_command(command: str) -> GitCommand | AdminCommand:
    if "\0" in command:
        raise CommandError("the command contains a NUL byte")
    try:
        command.encode("utf-8")
    except UnicodeEncodeError:  # bytes the SSH layer could not decode, kept as surrogates
        raise CommandError("the command is not valid UTF-8") from None
    if len(command) > MAX_COMMAND_LENGTH:
        raise CommandError(f"the command is longer than {MAX_COMMAND_LENGTH} characters")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise CommandError(f"cannot parse the command: {exc}") from None
    if not argv:
        raise CommandError("empty command; try 'help'")
    if argv[0] in GIT_SERVICES:
        if len(argv) != 2:
            raise CommandError(f"{argv[0]} takes exactly one repository argument")
        return GitCommand(service=argv[0], job=job_from_repo_path(argv[1]))
    if argv[0].startswith("git-") or argv[0] == "git":
        raise CommandError(f"{argv[0]!r} is not supported; push and fetch use {GIT_SERVICES}")
    return AdminCommand(argv=tuple(argv))
