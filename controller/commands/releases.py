"""releases:list, releases:info, releases:rollback and builds:cancel."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controller.commands.registry import (
    CommandContext,
    CommandFailed,
    command,
    format_table,
    json_flag,
)
from controller.errors import DeployFailed
from controller.store import Release


def release_number(text: str) -> int:
    """`r3` or `3` → 3."""
    try:
        number = int(text.removeprefix("r"))
    except ValueError:
        number = 0
    if number < 1:
        raise CommandFailed(f"{text!r} is not a release (like r3)")
    return number


def _release_json(release: Release) -> dict[str, Any]:
    return {
        "release": release.label,
        "job": release.job,
        "version": release.version,
        "status": release.status,
        "commit": release.commit_sha,
        "jobtype": release.jobtype,
        "artifact": release.artifact,
        "config_keys": sorted(release.config),
        "rollback_of": None if release.rollback_of is None else f"r{release.rollback_of}",
        "deployed_by": release.deployed_by,
        "created_at": release.created_at,
        "finished_at": release.finished_at,
        "error": release.error,
    }


def _job_and_release(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job")
    parser.add_argument("release", help="r3 or 3")
    json_flag(parser)


def _job(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job")
    json_flag(parser)


def _releases_of(ctx: CommandContext, job: str) -> list[Release]:
    releases = ctx.services.store.releases(job=job)
    if not releases:
        raise CommandFailed(f"no job {job!r}")
    return releases


@command("releases:list", "a job's releases, newest first", _job)
async def _releases_list(ctx: CommandContext, args: argparse.Namespace) -> None:
    releases = list(reversed(_releases_of(ctx, args.job)))
    if args.json:
        ctx.io.out(json.dumps([_release_json(r) for r in releases], indent=2) + "\n")
        return
    rows = [
        [
            r.label,
            r.version or "-",
            r.status,
            r.commit_sha[:12],
            f"rollback to r{r.rollback_of}" if r.rollback_of else "push",
            r.deployed_by,
            r.created_at,
        ]
        for r in releases
    ]
    ctx.io.out(
        format_table(["RELEASE", "VERSION", "STATUS", "COMMIT", "FROM", "BY", "CREATED"], rows)
    )


@command(
    "releases:info",
    "one release: commit, artifact, config keys, who, when, status",
    _job_and_release,
)
async def _releases_info(ctx: CommandContext, args: argparse.Namespace) -> None:
    _releases_of(ctx, args.job)
    number = release_number(args.release)
    release = ctx.services.store.release_by_number(args.job, number)
    if release is None:
        raise CommandFailed(f"{args.job} has no release r{number}")
    info = _release_json(release)
    if args.json:
        ctx.io.out(json.dumps(info, indent=2) + "\n")
        return
    artifact = release.artifact or {}
    info["artifact"] = artifact.get("image") or artifact.get("path") or "-"
    info["config_keys"] = ", ".join(info["config_keys"]) or "-"
    width = max(len(key) for key in info)
    lines = [
        f"{key.ljust(width)}  {'-' if value is None else value}" for key, value in info.items()
    ]
    ctx.io.out("\n".join(lines) + f"\n\nBuild output: builds:log {args.job} {release.label}\n")


def _rollback_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job")
    parser.add_argument(
        "release", nargs="?", help="the release to deploy again (default: the one before)"
    )


@command(
    "releases:rollback",
    "deploy an earlier release's artifact and config again, without rebuilding",
    _rollback_args,
)
async def _releases_rollback(ctx: CommandContext, args: argparse.Namespace) -> None:
    _releases_of(ctx, args.job)
    target = release_number(args.release) if args.release else None
    try:
        release = await ctx.services.deployer.rollback(
            args.job, target, ctx.user.name, lambda line: ctx.io.out(line + "\n")
        )
    except DeployFailed as exc:
        raise CommandFailed(str(exc)) from None
    ctx.io.out(
        f"{args.job} {release.version} now serves {release.label} (the artifact and config"
        f" of r{release.rollback_of}). The git branch still names the last push.\n"
    )


def _job_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job")


@command("builds:cancel", "stop the deploy of a job that is under way", _job_only)
async def _builds_cancel(ctx: CommandContext, args: argparse.Namespace) -> None:
    release = ctx.services.deployer.cancel(args.job, ctx.user.name)
    if release is None:
        raise CommandFailed(f"no deploy of {args.job!r} is under way")
    ctx.io.out(f"Cancelled the deploy of {args.job} {release.label}\n")


def _job_and_optional_release(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job")
    parser.add_argument("release", nargs="?", help="r3 or 3 (default: the newest)")


@command(
    "builds:log", "the full output of a deploy (also of failed ones)", _job_and_optional_release
)
async def _builds_log(ctx: CommandContext, args: argparse.Namespace) -> None:
    releases = _releases_of(ctx, args.job)
    if args.release is None:
        release = releases[-1]
    else:
        number = release_number(args.release)
        found = ctx.services.store.release_by_number(args.job, number)
        if found is None:
            raise CommandFailed(f"{args.job} has no release r{number}")
        release = found
    ctx.io.out(release.build_log or f"({release.label} has no build output yet)\n")
