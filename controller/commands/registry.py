"""The command registry: argparse per command, one-line failures, `--json` on listings.

Every command answers `--help`; a failure exits non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from controller.services import Services
from controller.store import User
from gitreceiver.interface import CommandIO


class CommandFailed(Exception):
    """A command could not do what was asked; the message is its one-line reason."""


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class CommandParser(argparse.ArgumentParser):
    """argparse that writes to the SSH channel and raises instead of exiting the server."""

    def __init__(self, io: CommandIO, **kwargs: Any) -> None:
        super().__init__(add_help=True, allow_abbrev=False, exit_on_error=False, **kwargs)
        self._io = io

    def print_help(self, file: Any = None) -> None:
        self._io.out(self.format_help())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._io.err(message)
        raise _ParserExit(status)

    def error(self, message: str) -> NoReturn:
        raise CommandFailed(f"{self.prog}: {message} (see: {self.prog} --help)")


@dataclass(frozen=True)
class CommandContext:
    user: User
    io: CommandIO
    services: Services


Handler = Callable[[CommandContext, argparse.Namespace], Awaitable[None]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    handler: Handler
    configure: Callable[[argparse.ArgumentParser], None]


COMMANDS: dict[str, Command] = {}


def command(
    name: str, summary: str, configure: Callable[[argparse.ArgumentParser], None] = lambda _p: None
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, summary, handler, configure)
        return handler

    return register


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


async def run_command(services: Services, user: User, argv: list[str], io: CommandIO) -> int:
    """Run one admin command; the return value is the SSH exit status."""
    name, args = argv[0], argv[1:]
    found = COMMANDS.get(name)
    if found is None:
        io.err(f"racetrack: unknown command {name!r}; 'help' lists the commands\n")
        return 1
    parser = CommandParser(io, prog=found.name, description=found.summary)
    found.configure(parser)
    try:
        namespace = parser.parse_args(args)
        await found.handler(CommandContext(user, io, services), namespace)
    except _ParserExit as exc:
        return exc.status
    except (CommandFailed, argparse.ArgumentError) as exc:
        io.err(f"racetrack: {' '.join(str(exc).split())}\n")
        return 1
    await io.drain()
    return 0
