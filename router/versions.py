"""Semantic versions and the version selectors of job URLs: exact, `latest`, or `1.x`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

# buildpacks.manifest validates versions with semver.org's stricter pattern; this one only has
# to parse what was accepted there (leaves do not import each other, so each keeps its own).
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_WILDCARD = re.compile(r"^(?:(0|[1-9]\d*)\.)?(?:(0|[1-9]\d*)\.)?[xX*]$")


@total_ordering
@dataclass(frozen=True)
class SemVer:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> SemVer | None:
        match = _SEMVER.fullmatch(text)
        if match is None:
            return None
        pre = tuple(match.group(4).split(".")) if match.group(4) else ()
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)), pre, text)

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A version without a pre-release tag ranks above any of its pre-releases;
        # numeric identifiers rank below alphanumeric ones (semver.org, rule 11).
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def select_version(selector: str, versions: list[str]) -> str | None:
    """Pick the version a URL asks for among the running ones.

    `latest` is the highest version without a pre-release tag; `1.x` (or `1.2.x`) the highest
    such version with that prefix; anything else must equal a running version exactly.
    """
    parsed = [(v, s) for v in versions if (s := SemVer.parse(v)) is not None]
    if selector == "latest":
        stable = [(s, v) for v, s in parsed if not s.prerelease]
        return max(stable)[1] if stable else None
    wildcard = _WILDCARD.fullmatch(selector)
    if wildcard is not None:
        major, minor = wildcard.group(1), wildcard.group(2)
        matching = [
            (s, v)
            for v, s in parsed
            if not s.prerelease
            and (major is None or s.major == int(major))
            and (minor is None or s.minor == int(minor))
        ]
        return max(matching)[1] if matching else None
    return selector if selector in versions else None
