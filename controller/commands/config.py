"""config:show, config:set, config:unset: the environment a job's releases run with, and with
`--build` the environment of its builds.

Values live in the store, outside the manifest; they are never printed in build logs or the
audit log (which names the keys), and `config:show` masks them unless an admin asks. The config
belongs to the job as a whole, so changing it needs deploy_job for the whole job, not for just
one version.

The build config (`--build`) reaches the next build's dependency install step the way the
secret build env file's values do (and wins over them); setting it redeploys nothing.
"""

from __future__ import annotations

import argparse

from controller.commands import arguments
from controller.commands.jobs import releases_of
from controller.commands.registry import (
    CommandContext,
    CommandFailed,
    Result,
    command,
    format_table,
    json_flag,
)
from controller.errors import PartlyReconfigured
from controller.permissions import ANY_VERSION, DEPLOY_JOB, READ_JOB
from controller.store import Release

MASK = "********"


def _build_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--build", action="store_true", help=help_text)


def _show_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    parser.add_argument("--reveal", action="store_true", help="show the values (admins only)")
    _build_flag(parser, "the build config (what builds get) instead of the runtime config")
    json_flag(parser)


@command(
    "config:show",
    "a job's config (--build: its build config): values masked (--reveal for admins)",
    _show_args,
)
async def _config_show(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(READ_JOB, args.job, ANY_VERSION)
    releases_of(ctx, args.job)
    if args.reveal:
        ctx.require_admin()
    config = _current(ctx, args.job, build=args.build)
    shown = config if args.reveal else dict.fromkeys(config, MASK)
    empty = "(no build config)\n" if args.build else "(no config)\n"
    text = format_table(["KEY", "VALUE"], sorted(shown.items())) if shown else empty
    return Result(shown, text)


def _applied(job: str, keys: list[str], releases: list[Release]) -> Result:
    if releases:
        text = "".join(
            f"{job} {r.version} now serves {r.label} with the new config\n" for r in releases
        )
    else:
        text = f"{job} serves nothing now: the next deploy runs with the new config\n"
    return Result({"keys": keys, "releases": [r.label for r in releases]}, text)


def _set_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    parser.add_argument("pairs", nargs="+", type=arguments.env_pair, metavar="KEY=VALUE")
    _build_flag(parser, "set the build config: the next build's environment (no redeploy)")


@command(
    "config:set",
    "set config values: a new release of what serves, no downtime (--build: for the next build)",
    _set_args,
)
async def _config_set(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(DEPLOY_JOB, args.job)
    releases_of(ctx, args.job)
    config = {**_current(ctx, args.job, build=args.build), **dict(args.pairs)}
    return await _change(ctx, "config:set", args.job, config, sorted(dict(args.pairs)), args.build)


def _current(ctx: CommandContext, job: str, *, build: bool) -> dict[str, str]:
    store = ctx.services.store
    return store.job_build_config(job) if build else store.job_config(job)


async def _change(
    ctx: CommandContext, action: str, job: str, config: dict[str, str], keys: list[str], build: bool
) -> Result:
    """Store a build config for the next build, or apply a runtime config to what serves."""
    if build:
        return _store_build_config(ctx, action, job, config, keys)
    return await _reconfigure(ctx, action, job, config, keys)


def _store_build_config(
    ctx: CommandContext, action: str, job: str, config: dict[str, str], keys: list[str]
) -> Result:
    """Keep the build config for the next build; audited by key names."""
    ctx.services.store.replace_job_build_config(job, config)
    ctx.audit(action, job, f"--build {', '.join(keys)}")
    text = (
        f"Build config of {job} changed ({', '.join(keys)}): it applies to the next build;"
        " nothing is redeployed now (push to build with it)\n"
    )
    return Result({"keys": keys, "build": True, "releases": []}, text)


async def _reconfigure(
    ctx: CommandContext, action: str, job: str, config: dict[str, str], keys: list[str]
) -> Result:
    """Apply the new config; audited (by key names) once any version runs with it."""
    try:
        releases = await ctx.services.releases.reconfigure(
            job, config, ctx.who.name, ctx.output.line
        )
    except PartlyReconfigured as exc:
        applied = ", ".join(r.label for r in exc.applied)
        ctx.audit(action, job, f"{', '.join(keys)} (only {applied}: {exc})")
        raise
    ctx.audit(action, job, ", ".join(keys))
    return _applied(job, keys, releases)


def _unset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=arguments.job_name)
    parser.add_argument("keys", nargs="+", type=arguments.env_name, metavar="KEY")
    _build_flag(parser, "remove from the build config (applies to the next build)")


@command(
    "config:unset",
    "remove config values: a new release of what serves (--build: for the next build)",
    _unset_args,
)
async def _config_unset(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require(DEPLOY_JOB, args.job)
    releases_of(ctx, args.job)
    config = _current(ctx, args.job, build=args.build)
    missing = [key for key in args.keys if key not in config]
    if missing:
        what = "build config" if args.build else "config"
        raise CommandFailed(f"{args.job} has no {what} {missing[0]}")
    remaining = {k: v for k, v in config.items() if k not in args.keys}
    return await _change(ctx, "config:unset", args.job, remaining, sorted(args.keys), args.build)
