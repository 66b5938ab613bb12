"""The one normalisation of a job path, for deciding what a call without a token may reach.

A public endpoint opens a path prefix on segment boundaries: `/api/v1/webview` opens
`/api/v1/webview`, `/api/v1/webview/` and `/api/v1/webview/postme`, never `/api/v1/webviewer`.

The router forwards the path as it came, and whoever handles it next may read it another way:
the router's own HTTP client removes `.` and `..` segments (even percent-encoded ones), some
servers decode `%2F` into a separator or take `\\` for one, and some read `..;x` as `..`. So a
path that could be read as more than one path is never public: it needs a token like any other.
A path that passes is one the job decodes to exactly the segments matched here, so a call
without a token never reaches anything outside the approved prefix.
"""

from __future__ import annotations

from urllib.parse import unquote

MAX_PATH_CHARS = 4096  # longer paths are never public (the request line is bounded anyway)
_DOT_SEGMENTS = frozenset({".", ".."})
_AMBIGUOUS = ("\\", "%", "#")  # after decoding: a separator to some, an escape, a fragment


def normalize_path(raw: str) -> str | None:
    """The decoded path without its query and trailing slash (`/` for the root), or None when
    it could be read as another path: dot segments (also `..;x` and percent-encoded), empty
    segments (`//`), an encoded `/` or `\\`, a backslash, `#`, a `%` left after decoding
    (double encoding, or an escape that is not one), bytes that are not UTF-8, control
    characters, or more than MAX_PATH_CHARS characters. Matching is case-sensitive."""
    bare = raw.partition("?")[0]
    if not bare.startswith("/") or len(bare) > MAX_PATH_CHARS:
        return None
    try:
        decoded = unquote(bare, errors="strict")
    except UnicodeDecodeError:
        return None
    if decoded.count("/") != bare.count("/") or not decoded.isprintable():
        return None  # an encoded separator, or control characters
    if any(mark in decoded for mark in _AMBIGUOUS):
        return None
    if decoded == "/":
        return "/"
    segments = decoded.split("/")[1:]
    if segments[-1] == "":
        segments.pop()  # one trailing slash
    for segment in segments:
        if segment == "" or segment.partition(";")[0] in _DOT_SEGMENTS:
            return None
    return "/" + "/".join(segments)


def is_under(path: str, prefix: str) -> bool:
    """Whether normalised `path` is `prefix` or below it, on a segment boundary."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")
