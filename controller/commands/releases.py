"""releases:list, releases:info, releases:rollback, builds:list, builds:log, builds:cancel."""

from __future__ import annotations

import argparse
from typing import Any

from controller.commands import arguments
from controller.commands.jobs import releases_of
from controller.commands.registry import (
    CommandContext,
    CommandFailed,
    NotFound,
    Result,
    command,
    format_table,
    json_flag,
)
from controller.permissions import ANY_VERSION, DEPLOY_JOB, READ_JOB
from controller.store import Cause, Release

CAUSE_TEXT = {
    Cause.ROLLBACK: "rollback to",
    Cause.CONFIG: "config change of",
    Cause.RESTART: "restart of",
    Cause.SCALE: "scaling of",
}


def release_json(release: Release) -> dict[str, Any]:
    return {
        "release": release.label,
        "job": release.job,
        "version": release.version,
        "status": release.status,
        "cause": release.cause,
        "commit": release.commit_sha,
        "jobtype": release.jobtype,
        "artifact": release.artifact.to_record() if release.artifact else None,
        "config_keys": sorted(release.config),
        "rollback_of": None if release.rollback_of is None else f"r{release.rollback_of}",
        "deployed_by": release.deployed_by,
        "created_at": release.created_at,
        "finished_at": release.finished_at,
        "error": release.error,
    }


def _origin(release: Release) -> str:
    if release.cause == Cause.PUSH:
        return "push"
    return f"{CAUSE_TEXT.get(release.cause, release.cause)} r{release.rollback_of}"


def _job(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    json_flag(parser)


def _find(ctx: CommandContext, job: str, number: int) -> Release:
    releases_of(ctx, job)
    release = ctx.services.store.release_by_number(job, number)
    if release is None:
        raise NotFound(f"{job} has no release r{number}")
    return release


def _readable(ctx: CommandContext, job: str) -> list[Release]:
    """The job's releases, oldest first, that the caller may read: a grant narrowed to a
    version shows that version's releases (and none whose version is not known)."""
    ctx.require(READ_JOB, job, ANY_VERSION)  # before anything tells whether the job exists
    return [r for r in releases_of(ctx, job) if ctx.allowed(READ_JOB, job, r.version)]


@command("releases:list", "a job's releases, newest first", _job)
async def _releases_list(ctx: CommandContext, args: argparse.Namespace) -> Result:
    releases = list(reversed(_readable(ctx, args.job)))
    rows = [
        [
            r.label,
            r.version or "-",
            r.status,
            r.commit_sha[:12],
            _origin(r),
            r.deployed_by,
            r.created_at,
        ]
        for r in releases
    ]
    text = format_table(["RELEASE", "VERSION", "STATUS", "COMMIT", "FROM", "BY", "CREATED"], rows)
    return Result([release_json(r) for r in releases], text)


def _job_release(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    parser.add_argument("release", type=arguments.release, help="r3 or 3")
    json_flag(parser)


@command(
    "releases:info",
    "one release: commit, artifact, config keys, who, when, status",
    _job_release,
)
async def _releases_info(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(READ_JOB, args.job, ANY_VERSION)
    release = _find(ctx, args.job, args.release)
    ctx.require(READ_JOB, args.job, release.version)
    info = release_json(release)
    shown = dict(info)
    shown["artifact"] = release.artifact.where if release.artifact else "-"
    shown["config_keys"] = ", ".join(info["config_keys"]) or "-"
    width = max(len(key) for key in shown)
    lines = [
        f"{key.ljust(width)}  {'-' if value is None else value}" for key, value in shown.items()
    ]
    text = "\n".join(lines) + f"\n\nBuild output: builds:log {args.job} {release.label}\n"
    return Result(info, text)


def _rollback_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    parser.add_argument(
        "release",
        type=arguments.release,
        nargs="?",
        help="the release to deploy again (default: the one before the current one)",
    )


@command(
    "releases:rollback",
    "deploy an earlier release's artifact and config again, without rebuilding",
    _rollback_args,
)
async def _releases_rollback(ctx: CommandContext, args: argparse.Namespace) -> Result:
    # the job's config becomes the release's: that needs deploy_job on the whole job
    ctx.require(DEPLOY_JOB, args.job)
    releases_of(ctx, args.job)
    release = await ctx.services.releases.rollback(
        args.job, args.release, ctx.who.name, ctx.output.line
    )
    ctx.audit("releases:rollback", args.job, f"{release.label} = r{release.rollback_of}")
    return Result(
        release_json(release),
        f"{args.job} {release.version} now serves {release.label} (the artifact and config"
        f" of r{release.rollback_of}). The git branch still names the last push.\n",
    )


@command("builds:list", "a job's deploys: release, status, duration, who", _job)
async def _builds_list(ctx: CommandContext, args: argparse.Namespace) -> Result:
    releases = list(reversed(_readable(ctx, args.job)))
    data = [
        {
            "release": r.label,
            "version": r.version,
            "status": r.status,
            "cause": r.cause,
            "by": r.deployed_by,
            "started_at": r.created_at,
            "finished_at": r.finished_at,
            "error": r.error,
        }
        for r in releases
    ]
    rows = [
        [
            d["release"],
            d["version"] or "-",
            d["status"],
            d["cause"],
            d["by"],
            d["started_at"],
            d["finished_at"] or "-",
        ]
        for d in data
    ]
    text = format_table(
        ["RELEASE", "VERSION", "STATUS", "CAUSE", "BY", "STARTED", "FINISHED"], rows
    )
    return Result(data, text)


def _log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    parser.add_argument("release", type=arguments.release, nargs="?", help="default: the newest")


@command("builds:log", "the full output of a deploy (also of a failed one)", _log_args)
async def _builds_log(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(READ_JOB, args.job, ANY_VERSION)
    if args.release is None:
        release = releases_of(ctx, args.job)[-1]
    else:
        release = _find(ctx, args.job, args.release)
    ctx.require(READ_JOB, args.job, release.version)
    log = release.build_log or f"({release.label} has no build output yet)\n"
    return Result({"release": release.label, "log": log}, log)


@command(
    "builds:cancel",
    "stop the deploy of a job that is under way",
    lambda p: p.add_argument("job", type=arguments.job_name),
)
async def _builds_cancel(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(DEPLOY_JOB, args.job, ANY_VERSION)
    running = ctx.services.releases.running.get(args.job)
    if running is not None:  # the version is known once the manifest is read; until then
        current = ctx.services.store.release_by_id(running.release.id)  # the whole job
        ctx.require(DEPLOY_JOB, args.job, current.version if current else None)
    release = ctx.services.releases.cancel(args.job, ctx.who.name)
    if release is None:
        raise CommandFailed(f"no deploy of {args.job!r} is under way")
    ctx.audit("builds:cancel", args.job, release.label)
    return Result(
        {"job": args.job, "release": release.label},
        f"Cancelled the deploy of {args.job} {release.label}\n",
    )
