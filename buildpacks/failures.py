"""Why a build step failed, in one line a pusher can act on.

A failing tool's last line is rarely the cause: pip ends with "This error originates from a
subprocess…", a Docker build with the step's exit code. The cause is the first error line
(pip's `ERROR:`, a compiler's `file.go:3:1: …`, apt's `E: …`), and, for a download that never
happened, the network or certificate failure further up. The full output stays in the build log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_REASON = 300  # characters of a rejection's reason
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
_ERROR = re.compile(
    r"^\s*(ERROR:|error:|Error:|E: |fatal:|FATAL:|[\w./-]+\.(go|rs|c|py):\d+(:\d+)?: )"
)
_NETWORK = re.compile(
    r"(Could not resolve host|Temporary failure in name resolution|Name or service not known"
    r"|Failed to establish a new connection|Connection refused|Network is unreachable"
    r"|timed out)",
    re.IGNORECASE,
)
_CERTIFICATE = re.compile(r"(CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLError)")


def plain(line: str) -> str:
    """The line without terminal colour codes and other control characters."""
    return _ANSI.sub("", line)


def shorten(text: str, limit: int = MAX_REASON) -> str:
    """One line of at most `limit` characters."""
    flat = " ".join(plain(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class Cause:
    """Fed a step's output line by line (it keeps three lines at most, whatever the output's
    length): the first error line, with the network or certificate failure that came before."""

    def __init__(self) -> None:
        self.first_error: str | None = None
        self.network: str | None = None
        self.certificate: str | None = None

    def feed(self, raw: str) -> None:
        line = plain(raw).strip()
        if not line:
            return
        if self.certificate is None and (found := _CERTIFICATE.search(line)):
            self.certificate = found.group(1)
        elif self.network is None and (found := _NETWORK.search(line)):
            self.network = found.group(1)
        if self.first_error is None and _ERROR.match(line):
            self.first_error = line

    def reason(self) -> str | None:
        if self.certificate is not None:
            hint = (
                f"{self.certificate}: the build does not trust the package index's certificate"
                " (behind a TLS-intercepting proxy, give its CA with --build-ca-bundle)"
            )
            return f"{self.first_error} ({hint})" if self.first_error else hint
        if self.network is not None and self.first_error is not None:
            if self.network.lower() in self.first_error.lower():
                return self.first_error
            return f"{self.first_error} ({self.network})"
        return self.first_error


def cause(lines: Iterable[str]) -> str | None:
    """The cause in a step's whole output (see `Cause`)."""
    finder = Cause()
    for line in lines:
        finder.feed(line)
    return finder.reason()
