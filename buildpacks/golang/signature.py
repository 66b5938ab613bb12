"""Which `Perform` a Go job's root package defines, found before anything is compiled.

Two conventions are accepted (`any` may stand for `interface{}` anywhere):
- the plugin's: `func Perform(input map[string]interface{}) (interface{}, error)`;
- the user guide's: `func Perform(args []interface{}, kwargs map[string]interface{})
  (interface{}, error)`.
Anything else is refused with one line that quotes both and names the file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from buildpacks.build import BuildFailed
from buildpacks.golang.scanner import IDENT, FuncDecl, GoFile, Token, join, parse, split_top_level

PLUGIN_SIGNATURE = "func Perform(input map[string]interface{}) (interface{}, error)"
GUIDE_SIGNATURE = (
    "func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error)"
)
# both, in every refusal: it stays one line within a rejection's 300 characters
ACCEPTED = f"{PLUGIN_SIGNATURE} or {GUIDE_SIGNATURE}"
MAX_SOURCE_BYTES = 64 * 1024 * 1024  # of the root package's .go files, together
MAX_QUOTED = 95  # characters of a wrong signature quoted back
MAX_NAME = 40  # characters of a file's name
_KEYWORDS = frozenset({"map", "chan", "func", "interface", "struct"})
_ANY = "interface{}"


class Form(enum.Enum):
    PLUGIN = "plugin"  # Perform(input map[string]interface{})
    GUIDE = "guide"  # Perform(args []interface{}, kwargs map[string]interface{})


_PARAMS = {
    ("map[string]interface{}",): Form.PLUGIN,
    ("[]interface{}", "map[string]interface{}"): Form.GUIDE,
}
_RESULTS = ("interface{}", "error")


@dataclass(frozen=True)
class Perform:
    form: Form
    file: str  # relative to the package directory
    package: str


@dataclass(frozen=True)
class SourceFile:
    path: Path
    text: str
    parsed: GoFile


def package_files(directory: Path) -> list[SourceFile]:
    """The Go files `go build` compiles in `directory` (tests and `ignore`d files left out)."""
    files: list[SourceFile] = []
    total = 0
    for path in sorted(directory.glob("*.go")):
        if path.name.endswith("_test.go") or path.name.startswith((".", "_")):
            continue
        if not path.is_file():
            continue
        total += path.stat().st_size
        if total > MAX_SOURCE_BYTES:
            raise BuildFailed(
                f"the job's root package has more than {MAX_SOURCE_BYTES // 2**20} MiB of Go"
                " source; keep large data out of .go files"
            )
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        if _ignored(text):
            continue
        files.append(SourceFile(path, text, parse(text)))
    return files


def _ignored(text: str) -> bool:
    """A `//go:build ignore` (or `// +build ignore`) file, before the package clause."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("package "):
            return False
        if stripped in ("//go:build ignore", "// +build ignore"):
            return True
    return False


def detect(files: list[SourceFile], where: str) -> Perform:
    """The form of the one function Perform in `files`; BuildFailed saying what to write."""
    if not files:
        raise BuildFailed(f"no .go files in {where}: define {ACCEPTED}")
    method: tuple[SourceFile, FuncDecl] | None = None
    for source in files:
        for decl in source.parsed.funcs:
            if decl.name.text != "Perform":
                continue
            if decl.receiver:
                method = method or (source, decl)
                continue
            form = form_of(decl)
            if form is None:
                raise BuildFailed(
                    f"{_cut(source.path.name, MAX_NAME)} has {_cut(decl.text, MAX_QUOTED)};"
                    f" write {ACCEPTED}"
                )
            package = source.parsed.package
            return Perform(form, source.path.name, package.text if package else "")
    if method is not None:
        raise BuildFailed(
            f"{_cut(method[0].path.name, MAX_NAME)} has Perform as a method; write a function:"
            f" {ACCEPTED}"
        )
    raise BuildFailed(f"no func Perform in the .go files of {where}: define {ACCEPTED}")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def form_of(decl: FuncDecl) -> Form | None:
    """Which accepted signature `decl` has, if any."""
    if decl.type_params:
        return None
    params = _types(decl.params)
    results = decl.results
    if results and results[0].text == "(" and results[-1].text == ")":
        result_types = _types(results[1:-1])
    else:
        return None  # one unparenthesised result can never be (interface{}, error)
    if params is None or result_types != _RESULTS:
        return None
    return _PARAMS.get(params)


def _types(items: tuple[Token, ...]) -> tuple[str, ...] | None:
    """The normalised types of a parameter list (`a, b T` gives T twice); None if unreadable."""
    parts = split_top_level(items)
    if not parts:
        return ()
    named = [_named(part) for part in parts]
    if any(named):
        # every part has a name: `a T`, or `a` sharing the next part's type (`a, b T`)
        types: list[str] = []
        pending = 0
        for part, has_name in zip(parts, named, strict=True):
            if not has_name:
                if len(part) != 1 or part[0].kind != IDENT:
                    return None
                pending += 1
                continue
            text = _normal(part[1:])
            types += [text] * (pending + 1)
            pending = 0
        return None if pending else tuple(types)
    return tuple(_normal(part) for part in parts)


def _named(part: tuple[Token, ...]) -> bool:
    """`name Type` (not `Type`, `pkg.Type` or `map[...]...`)."""
    first = part[0]
    return (
        len(part) >= 2
        and first.kind == IDENT
        and first.text not in _KEYWORDS
        and part[1].text != "."
    )


def _normal(part: tuple[Token, ...]) -> str:
    """A type as compact text, with `any` spelled `interface{}`."""
    return "".join(_ANY if t.kind == IDENT and t.text == "any" else t.text for t in part)


__all__ = ["ACCEPTED", "Form", "Perform", "SourceFile", "detect", "join", "package_files"]
