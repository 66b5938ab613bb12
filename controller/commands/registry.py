"""The command registry: one implementation of each operation, reached over SSH and HTTP.

A command declares its arguments with argparse and returns a `Result`: data (what `--json`
prints and the API returns) and, for people, text. Over SSH the words after the command are
parsed; over the API a JSON object supplies the same arguments by name. Every command answers
`--help`; a failure is a one-line reason (SSH: exit 1 on stderr; API: an error status).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from controller.errors import DeployFailed
from controller.permissions import Forbidden, Principal
from controller.services import Services
from gitreceiver.interface import CommandIO

MAX_INPUT_BYTES = 64 * 1024


class CommandFailed(Exception):
    """A command could not do what was asked; the message is its one-line reason."""


class NotFound(CommandFailed):
    """What the command names does not exist (HTTP 404)."""


class Output(Protocol):
    """Where a command's progress lines go while it runs, and where its input comes from."""

    can_stream: bool  # lines reach the caller as they come (SSH), or with the result (API)

    def line(self, text: str) -> None: ...

    @property
    def closed(self) -> bool: ...

    async def drain(self) -> None: ...

    async def read_input(self, limit: int) -> bytes: ...


@dataclass(frozen=True)
class Result:
    data: Any = None  # what --json prints and the API returns
    text: str | None = None  # what a person reads (default: the data as JSON)


@dataclass(frozen=True)
class CommandContext:
    who: Principal
    services: Services
    output: Output

    def require(
        self,
        scope: str,
        family: str | None = None,
        version: Any = None,
        endpoint: str | None = None,
    ) -> None:
        self.services.permissions.require(self.who, scope, family, version, endpoint)

    def allowed(self, scope: str, family: str, version: str | None) -> bool:
        return self.services.permissions.allowed(self.who, scope, family, version)

    def require_admin(self) -> None:
        self.services.permissions.require_admin(self.who)

    def audit(self, action: str, job: str | None = None, detail: str = "") -> None:
        self.services.store.audit(self.who.subject, action, job, detail)


Handler = Callable[[CommandContext, argparse.Namespace], Awaitable[Result]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    handler: Handler
    configure: Callable[[argparse.ArgumentParser], None]


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    summary: str,
    configure: Callable[[argparse.ArgumentParser], None] = lambda _p: None,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, summary, handler, configure)
        return handler

    return register


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class CommandParser(argparse.ArgumentParser):
    """argparse that writes help to the caller and raises instead of exiting the server."""

    def __init__(self, write: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(add_help=True, allow_abbrev=False, exit_on_error=False, **kwargs)
        self._write = write

    def print_help(self, file: Any = None) -> None:
        self._write(self.format_help())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._write(message)
        raise _ParserExit(status)

    def error(self, message: str) -> NoReturn:
        raise CommandFailed(f"{self.prog}: {message} (see: {self.prog} --help)")


def parser_for(found: Command, write: Callable[[str], None]) -> CommandParser:
    parser = CommandParser(write, prog=found.name, description=found.summary)
    found.configure(parser)
    return parser


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


# over SSH


class _SshOutput:
    can_stream = True

    def __init__(self, io: CommandIO) -> None:
        self._io = io

    def line(self, text: str) -> None:
        self._io.out(text + "\n")

    @property
    def closed(self) -> bool:
        return self._io.closed

    async def drain(self) -> None:
        await self._io.drain()

    async def read_input(self, limit: int) -> bytes:
        return await self._io.read_input(limit)


async def run_command(services: Services, who: Principal, argv: list[str], io: CommandIO) -> int:
    """Run one admin command over SSH; the return value is the exit status."""
    name, args = argv[0], argv[1:]
    found = COMMANDS.get(name)
    if found is None:
        io.err(f"racetrack: unknown command {name!r}; 'help' lists the commands\n")
        return 1
    parser = parser_for(found, io.out)
    try:
        namespace = parser.parse_args(args)
        result = await found.handler(CommandContext(who, services, _SshOutput(io)), namespace)
    except _ParserExit as exc:
        return exc.status
    except (CommandFailed, DeployFailed, Forbidden, argparse.ArgumentError, ValueError) as exc:
        io.err(f"racetrack: {one_line(exc)}\n")
        return 1
    if getattr(namespace, "json", False) or result.text is None:
        if result.data is not None:
            io.out(json.dumps(result.data, indent=2) + "\n")
    else:
        io.out(result.text)
    await io.drain()
    return 0


# over HTTP


@dataclass
class _CollectedOutput:
    input: bytes = b""
    lines: list[str] = field(default_factory=list)
    can_stream = False

    def line(self, text: str) -> None:
        self.lines.append(text)

    @property
    def closed(self) -> bool:
        return False

    async def drain(self) -> None:
        pass

    async def read_input(self, limit: int) -> bytes:
        if len(self.input) > limit:
            raise CommandFailed(f"input is larger than {limit} bytes")
        return self.input


def _json_value(parser: argparse.ArgumentParser, action: argparse.Action, value: Any) -> Any:
    """One argument from JSON, checked and converted as argparse would convert words."""
    name = f"{parser.prog}: {action.dest!r}"
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise CommandFailed(f"{name} must be true or false")
        return value
    if action.nargs in ("*", "+"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CommandFailed(f"{name} must be a list of strings")
        converted: Any = [action.type(v) if callable(action.type) else v for v in value]
    else:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise CommandFailed(f"{name} must be a string or a number")
        converted = action.type(str(value)) if callable(action.type) else str(value)
    if action.choices is not None and converted not in action.choices:
        raise CommandFailed(f"{name} must be one of {list(action.choices)}")
    return converted


def namespace_from_json(
    parser: argparse.ArgumentParser, body: dict[str, Any]
) -> argparse.Namespace:
    """The API's JSON object as the argparse namespace the SSH words would give."""
    namespace = argparse.Namespace()
    known = set()
    for action in parser._actions:
        if action.dest in ("help", argparse.SUPPRESS):
            continue
        known.add(action.dest)
        if action.dest not in body:
            if action.required or (not action.option_strings and action.nargs in (None, "+")):
                raise CommandFailed(f"{parser.prog}: {action.dest!r} is required")
            setattr(namespace, action.dest, action.default)
            continue
        try:
            value = _json_value(parser, action, body[action.dest])
        except argparse.ArgumentTypeError as exc:
            raise CommandFailed(f"{parser.prog}: argument {action.dest}: {exc}") from None
        setattr(namespace, action.dest, value)
    unknown = sorted(set(body) - known - {"input"})
    if unknown:
        parameters = ", ".join(sorted(known))
        raise CommandFailed(
            f"{parser.prog}: unknown parameter {unknown[0]!r} (parameters: {parameters})"
        )
    return namespace


async def run_api_command(
    services: Services, who: Principal, name: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """Run one command for the HTTP API: (status, JSON body)."""
    found = COMMANDS.get(name)
    if found is None:
        return 404, {"error": f"unknown command {name!r}"}
    output = _CollectedOutput(input=str(body.get("input", "")).encode())
    try:
        namespace = namespace_from_json(parser_for(found, output.line), body)
        result = await found.handler(CommandContext(who, services, output), namespace)
    except Forbidden as exc:
        return 403, {"error": one_line(exc)}
    except NotFound as exc:
        return 404, {"error": one_line(exc)}
    except (CommandFailed, DeployFailed, ValueError) as exc:
        return 400, {"error": one_line(exc), "output": output.lines}
    return 200, {"result": result.data, "output": output.lines}
