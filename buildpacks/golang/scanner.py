"""A small Go tokenizer: enough to read a package clause and top-level function signatures.

It skips comments and string, raw string and rune literals, so that text inside them (a comment
saying `func Perform(...)`) is never taken for code. Newlines are dropped: a signature may span
lines. Malformed input (an unterminated string or comment) ends the token stream; the compiler
reports it properly later.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

IDENT, PUNCT, LITERAL = "ident", "punct", "literal"
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<line_comment>//[^\n]*)
    | (?P<block_comment>/\*.*?\*/)
    | (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<rune>'(?:[^'\\\n]|\\.)*')
    | (?P<unterminated>/\*|["`'])
    | (?P<number>\.?\d[\w.]*)
    | (?P<ident>[^\W\d]\w*)
    | (?P<ellipsis>\.\.\.)
    | (?P<punct>[^\s\w])
    """,
    re.VERBOSE | re.DOTALL,
)
_SKIPPED = frozenset({"space", "line_comment", "block_comment"})
_LITERALS = frozenset({"string", "raw", "rune", "number"})
OPENING, CLOSING = "([{", ")]}"


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int  # offset in the source text
    end: int


def tokens(text: str) -> Iterator[Token]:
    """The code tokens of `text`, comments and whitespace left out."""
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            return
        group = match.lastgroup or "punct"
        if group == "unterminated":  # nothing after it is code
            return
        position = match.end()
        if group in _SKIPPED:
            continue
        kind = LITERAL if group in _LITERALS else IDENT if group == "ident" else PUNCT
        yield Token(kind, match.group(), match.start(), match.end())


@dataclass(frozen=True)
class FuncDecl:
    """A top-level `func Name(params) results`, as tokens (methods have a receiver)."""

    name: Token
    receiver: bool
    type_params: tuple[Token, ...]  # a generic function's `[T any]`, empty otherwise
    params: tuple[Token, ...]
    results: tuple[Token, ...]

    @property
    def text(self) -> str:
        """The signature as one line: `func Perform(x int) (int, error)`."""
        params = join(self.params).rstrip(",")
        results = join(self.results).replace(",)", ")")
        generic = f"[{join(self.type_params)}]" if self.type_params else ""
        signature = f"func {self.name.text}{generic}({params})"
        return signature + (f" {results}" if results else "")


@dataclass(frozen=True)
class GoFile:
    package: Token | None
    funcs: tuple[FuncDecl, ...]


def join(items: tuple[Token, ...] | list[Token]) -> str:
    """Tokens back to readable Go: a space between words, none around punctuation."""
    out = ""
    previous: Token | None = None
    for token in items:
        if previous is not None and _spaced(previous, token):
            out += " "
        out += token.text
        previous = token
    return out


def _spaced(left: Token, right: Token) -> bool:
    if left.text == ",":
        return True
    words = (IDENT, LITERAL)
    if left.kind not in words:
        return False
    if left.text in ("map", "func", "interface", "struct"):
        return right.kind in words
    return right.kind in words or right.text in ("[", "(", "*", "...")


def parse(text: str) -> GoFile:
    """The package clause and the top-level function declarations of one Go file."""
    stream = list(tokens(text))
    package = None
    if len(stream) >= 2 and stream[0].text == "package" and stream[1].kind == IDENT:
        package = stream[1]
    funcs: list[FuncDecl] = []
    depth = 0
    index = 0
    while index < len(stream):
        token = stream[index]
        if token.text in OPENING:
            depth += 1
        elif token.text in CLOSING:
            depth = max(0, depth - 1)
        elif depth == 0 and token.kind == IDENT and token.text == "func":
            decl, index = _func(stream, index + 1)
            if decl is not None:
                funcs.append(decl)
            continue
        index += 1
    return GoFile(package, tuple(funcs))


def _func(stream: list[Token], index: int) -> tuple[FuncDecl | None, int]:
    """The declaration after a top-level `func`; the index to go on scanning from (its body,
    whose braces the caller counts)."""
    receiver = False
    if index < len(stream) and stream[index].text == "(":
        receiver = True
        _, index = _group(stream, index)
    if index >= len(stream) or stream[index].kind != IDENT:
        return None, index  # a function literal at top level (`var f = func() {...}`)
    name = stream[index]
    index += 1
    type_params: tuple[Token, ...] = ()
    if index < len(stream) and stream[index].text == "[":
        type_params, index = _group(stream, index)
    if index >= len(stream) or stream[index].text != "(":
        return None, index
    params, index = _group(stream, index)
    results, index = _results(stream, index)
    return FuncDecl(name, receiver, type_params, params, results), index


def _group(stream: list[Token], index: int) -> tuple[tuple[Token, ...], int]:
    """The tokens inside the bracket pair opening at `index`, and the index after it."""
    depth = 0
    start = index
    while index < len(stream):
        text = stream[index].text
        if text in OPENING:
            depth += 1
        elif text in CLOSING:
            depth -= 1
            if depth == 0:
                return tuple(stream[start + 1 : index]), index + 1
        index += 1
    return tuple(stream[start + 1 :]), index


def _results(stream: list[Token], index: int) -> tuple[tuple[Token, ...], int]:
    """A parenthesised result list, or a single result type up to the body's `{`."""
    if index < len(stream) and stream[index].text == "(":
        inner, after = _group(stream, index)
        return (stream[index], *inner, stream[after - 1]), after
    found: list[Token] = []
    while index < len(stream):
        token = stream[index]
        if token.text in ("interface", "struct") and _next_is(stream, index, "{"):
            body, after = _group(stream, index + 1)
            found += [token, stream[index + 1], *body, stream[after - 1]]
            index = after
            continue
        if token.text in ("{", ";", "}") or token.text in ("func", "type", "var", "const"):
            break
        if token.text in ("(", "["):
            inner, after = _group(stream, index)
            found += [token, *inner, stream[after - 1]]
            index = after
            continue
        found.append(token)
        index += 1
    return tuple(found), index


def _next_is(stream: list[Token], index: int, text: str) -> bool:
    return index + 1 < len(stream) and stream[index + 1].text == text


def split_top_level(items: tuple[Token, ...]) -> list[tuple[Token, ...]]:
    """A parameter list's parts, split at the commas outside brackets."""
    parts: list[tuple[Token, ...]] = []
    current: list[Token] = []
    depth = 0
    for token in items:
        if token.text in OPENING:
            depth += 1
        elif token.text in CLOSING:
            depth -= 1
        if token.text == "," and depth == 0:
            parts.append(tuple(current))
            current = []
            continue
        current.append(token)
    if current:
        parts.append(tuple(current))
    return parts
