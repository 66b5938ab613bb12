"""Argument types shared by commands: each refuses bad input with a reason, before it reaches
the disk, a shell, the store or a container."""

from __future__ import annotations

import argparse
import re

from buildpacks.manifest import (
    ENV_NAME_RE,
    JOB_NAME_RE,
    JOB_NAME_RULE,
    MAX_REPLICAS,
    SEMVER_RE,
    endpoint_problem,
    reserved_env,
)

USER_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
MAX_CONFIG_VALUE = 64 * 1024


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)


def job_name(text: str) -> str:
    if not JOB_NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{_printable(text)!r} is not a job name ({JOB_NAME_RULE})"
        )
    return text


def version(text: str) -> str:
    if not SEMVER_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{_printable(text)!r} is not a version like 1.2.3")
    return text


def user_name(text: str) -> str:
    if not USER_NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{_printable(text)!r} is not a name (lowercase letters, digits and '-', starting"
            " with a letter, at most 32 characters)"
        )
    return text


def release(text: str) -> int:
    """`r3` or `3` → 3."""
    match = re.fullmatch(r"r?([1-9][0-9]{0,8})", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{_printable(text)!r} is not a release (like r3)")
    return int(match.group(1))


def positive_int(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{_printable(text)!r} is not a whole number above 0")
    return int(text)


def replicas(text: str) -> int:
    count = positive_int(text)
    if count > MAX_REPLICAS:
        raise argparse.ArgumentTypeError(
            f"{count} is more than the {MAX_REPLICAS} replicas allowed"
        )
    return count


def env_name(text: str) -> str:
    """A name to unset: any variable name (one set before it was reserved can go)."""
    if not ENV_NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{_printable(text)!r} is not an environment variable name"
        )
    return text


def env_pair(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"{_printable(text)!r} is not KEY=VALUE")
    env_name(name)
    if reason := reserved_env(name):
        raise argparse.ArgumentTypeError(reason)
    if "\0" in value or len(value) > MAX_CONFIG_VALUE:
        raise argparse.ArgumentTypeError(f"the value of {name} has a NUL byte or is too long")
    return name, value


def endpoint(text: str) -> str:
    if not text.startswith("/") or not text.isprintable() or ".." in text.split("/"):
        raise argparse.ArgumentTypeError(f"{_printable(text)!r} is not a path starting with '/'")
    return text


def public_endpoint(text: str) -> str:
    """A path as `public_endpoints` in job.yaml holds it (decoded, no query, no `..`)."""
    problem = endpoint_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{_printable(text)[:200]!r} {problem}")
    return text
