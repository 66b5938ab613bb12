"""help, jobs:list, jobs:info, jobs:delete, jobs:restart, ps:scale and logs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from controller.commands import arguments
from controller.commands.registry import (
    COMMANDS,
    CommandContext,
    CommandFailed,
    NotFound,
    Result,
    command,
    format_table,
    json_flag,
)
from controller.jobs import list_jobs
from controller.permissions import ANY_VERSION, DELETE_JOB, DEPLOY_JOB, READ_JOB
from controller.store import Release

FOLLOW_CHECK_INTERVAL = 1.0  # how soon `logs -f` notices that its client has gone


@command("help", "list the commands", json_flag)
async def _help(ctx: CommandContext, _args: argparse.Namespace) -> Result:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {c.name.ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    text = (
        "Racetrack commands (ssh -p PORT git@HOST <command> [--help]):\n"
        + "\n".join(lines)
        + f"\n\nDeploy: git remote add racetrack {ctx.services.ssh_url}/<job>"
        " && git push racetrack main\n"
    )
    return Result({c.name: c.summary for c in COMMANDS.values()}, text)


def _job(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)


def _job_version(parser: argparse.ArgumentParser, *, required: bool) -> None:
    _job(parser)
    parser.add_argument("version", type=arguments.version, nargs=None if required else "?")


def releases_of(ctx: CommandContext, job: str) -> list[Release]:
    """The job's releases, oldest first; NotFound if there is no such job."""
    releases = ctx.services.store.releases(job=job)
    if not releases:
        raise NotFound(f"no job {job!r}")
    return releases


def _list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all", action="store_true", help="also the versions removed with jobs:delete"
    )
    json_flag(parser)


@command("jobs:list", "list job versions: status, release, restarts, URL", _list_args)
async def _jobs_list(ctx: CommandContext, args: argparse.Namespace) -> Result:
    permissions = ctx.services.permissions
    services = ctx.services
    rows = [
        row
        for row in await list_jobs(services.store, services.releases, include_deleted=args.all)
        if permissions.allowed(ctx.who, READ_JOB, row.name, row.version)
    ]
    text = "No jobs yet. Push one: git push racetrack main\n"
    if rows:
        text = format_table(
            ["NAME", "VERSION", "STATUS", "RELEASE", "RESTARTS", "URL"],
            [[r.name, r.version, r.status, r.release, r.restarts, r.url or "-"] for r in rows],
        )
    return Result([row.to_json() for row in rows], text)


def _info_args(parser: argparse.ArgumentParser) -> None:
    _job_version(parser, required=False)
    json_flag(parser)


@command("jobs:info", "a job: owner, versions, instances, config keys", _info_args)
async def _jobs_info(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(READ_JOB, args.job, args.version or ANY_VERSION)
    releases_of(ctx, args.job)
    services = ctx.services
    rows = [
        row
        for row in await list_jobs(services.store, services.releases)
        if row.name == args.job
        and args.version in (None, row.version)
        and ctx.allowed(READ_JOB, args.job, row.version)
    ]
    if not rows:
        raise NotFound(f"{args.job} has no version {args.version}")
    instances: dict[str, list[dict[str, Any]]] = {}
    for serving in services.releases.serving:
        if serving.release.job == args.job:
            instances[serving.release.version or ""] = [
                {"name": r.name, "url": r.url, "up": r.up} for r in serving.running.replicas()
            ]
    family = services.store.family(args.job)
    data = {
        "job": args.job,
        "owner": family.owner if family else None,
        "config_keys": sorted(services.store.job_config(args.job)),
        "versions": [
            {**row.to_json(), "instances": instances.get(row.version, [])} for row in rows
        ],
    }
    lines = [f"job {args.job}, owner {data['owner'] or '-'}"]
    lines.append(f"config keys: {', '.join(data['config_keys']) or '-'}")
    for version in data["versions"]:
        lines.append(
            f"{version['version']}: {version['status']}, {version['release']},"
            f" {version['restarts']} restart(s), {version['url'] or '-'}"
        )
        lines += [
            f"  {i['name']}  {i['url']}  {'up' if i['up'] else 'restarting'}"
            for i in version["instances"]
        ]
    return Result(data, "\n".join(lines) + "\n")


@command(
    "jobs:delete",
    "stop a job version: routes removed, calls in flight finish",
    lambda p: _job_version(p, required=True),
)
async def _jobs_delete(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(DELETE_JOB, args.job, args.version)
    releases_of(ctx, args.job)
    release = await ctx.services.releases.delete(args.job, args.version, ctx.who.name)
    ctx.audit("jobs:delete", args.job, f"{args.version} {release.label}")
    return Result(
        {"job": args.job, "version": args.version, "release": release.label},
        f"Deleted {args.job} {args.version} ({release.label}): no longer routed, stopped\n",
    )


@command(
    "jobs:restart",
    "fresh instances of what serves, swapped in without downtime",
    lambda p: _job_version(p, required=False),
)
async def _jobs_restart(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(DEPLOY_JOB, args.job, args.version or ANY_VERSION)
    releases_of(ctx, args.job)
    releases = await ctx.services.releases.restart(
        args.job, args.version, ctx.who.name, ctx.output.line, permit=_deploy_permit(ctx)
    )
    ctx.audit("jobs:restart", args.job, ", ".join(r.label for r in releases))
    return _new_releases(releases)


def _deploy_permit(ctx: CommandContext) -> Callable[[Release], None]:
    """For work on every version that serves: checked for each version under the job's lock."""
    return lambda release: ctx.require(DEPLOY_JOB, release.job, release.version)


def _new_releases(releases: list[Release]) -> Result:
    text = "".join(f"{r.job} {r.version} now serves {r.label}\n" for r in releases)
    return Result([{"version": r.version, "release": r.label} for r in releases], text)


def _scale_args(parser: argparse.ArgumentParser) -> None:
    _job(parser)
    parser.add_argument("replicas", type=arguments.replicas)
    parser.add_argument("--version", type=arguments.version)


@command("ps:scale", "run N instances of what serves (until the next push)", _scale_args)
async def _ps_scale(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(DEPLOY_JOB, args.job, args.version or ANY_VERSION)
    releases_of(ctx, args.job)
    releases = await ctx.services.releases.scale(
        args.job,
        args.version,
        args.replicas,
        ctx.who.name,
        ctx.output.line,
        permit=_deploy_permit(ctx),
    )
    ctx.audit(
        "ps:scale", args.job, f"{args.replicas} replicas: {', '.join(r.label for r in releases)}"
    )
    return _new_releases(releases)


def _logs_args(parser: argparse.ArgumentParser) -> None:
    _job(parser)
    parser.add_argument("--version", type=arguments.version)
    parser.add_argument("--tail", type=arguments.positive_int, default=100, metavar="N")
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep streaming until you disconnect"
    )


@command("logs", "a job's output (-f: keep following until you disconnect)", _logs_args)
async def _logs(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(READ_JOB, args.job, args.version)  # no version: every version's output
    releases_of(ctx, args.job)
    if args.follow and not ctx.output.can_stream:
        raise CommandFailed("logs --follow streams: use it over SSH")
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def read() -> None:
        try:
            async for line in ctx.services.releases.logs(
                args.job, args.version, args.tail, args.follow
            ):
                await queue.put(line)
        finally:
            await queue.put(None)

    reader = asyncio.ensure_future(read())
    collected: list[str] = []
    try:
        while not ctx.output.closed:
            try:
                line = await asyncio.wait_for(queue.get(), FOLLOW_CHECK_INTERVAL)
            except TimeoutError:
                continue  # nothing new: look whether the client is still there
            if line is None:
                break
            collected.append(line)
            if ctx.output.can_stream:
                ctx.output.line(line)
                await ctx.output.drain()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    if reader.done() and not reader.cancelled() and reader.exception() is not None:
        raise reader.exception()  # type: ignore[misc]
    return Result(collected, "" if ctx.output.can_stream else "\n".join(collected) + "\n")
