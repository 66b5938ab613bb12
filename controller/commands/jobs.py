"""help, jobs:list and auth:token."""

from __future__ import annotations

import argparse
import json

from controller.commands.registry import COMMANDS, CommandContext, command, format_table, json_flag
from controller.jobs import list_jobs


@command("help", "list the commands")
async def _help(ctx: CommandContext, _args: argparse.Namespace) -> None:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {c.name.ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    ctx.io.out(
        "Racetrack commands (ssh -p PORT git@HOST <command> [--help]):\n"
        + "\n".join(lines)
        + f"\n\nDeploy: git remote add racetrack {ctx.services.ssh_url}/<job>"
        " && git push racetrack main\n"
    )


@command("jobs:list", "list job versions: status, release, URL", json_flag)
async def _jobs_list(ctx: CommandContext, args: argparse.Namespace) -> None:
    rows = await list_jobs(ctx.services.store, ctx.services.deployer)
    if args.json:
        ctx.io.out(json.dumps([row.to_json() for row in rows], indent=2) + "\n")
        return
    if not rows:
        ctx.io.out("No jobs yet. Push one: git push racetrack main\n")
        return
    ctx.io.out(
        format_table(
            ["NAME", "VERSION", "STATUS", "RELEASE", "RESTARTS", "URL"],
            [[r.name, r.version, r.status, r.release, r.restarts, r.url or "-"] for r in rows],
        )
    )


@command("auth:token", "print your API token (header X-Racetrack-Auth)")
async def _auth_token(ctx: CommandContext, _args: argparse.Namespace) -> None:
    ctx.io.out(ctx.services.accounts.token_for(ctx.user) + "\n")
