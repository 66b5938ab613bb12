"""perms:grant, perms:revoke, perms:list and audit:log."""

from __future__ import annotations

import argparse

from controller.commands import arguments
from controller.commands.registry import (
    CommandContext,
    CommandFailed,
    NotFound,
    Result,
    command,
    format_table,
    json_flag,
)
from controller.permissions import FULL_ACCESS, SCOPES, SUBJECT_KINDS
from controller.store import Grant


def subject(text: str) -> str:
    """`user:NAME`, `esc:NAME` or `family:NAME`."""
    kind, colon, name = text.partition(":")
    if not colon or kind not in SUBJECT_KINDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a subject: user:NAME, esc:NAME or family:NAME"
        )
    (arguments.job_name if kind == "family" else arguments.user_name)(name)
    return text


def _check_subject_exists(ctx: CommandContext, text: str) -> None:
    kind, _, name = text.partition(":")
    store = ctx.services.store
    exists = {
        "user": lambda: store.user_by_name(name) is not None,
        "esc": lambda: store.esc_by_name(name) is not None,
        "family": lambda: True,  # a grant may come before the family's first push
    }[kind]()
    if not exists:
        raise NotFound(f"no {kind} {name!r}")


def _grant_json(grant: Grant) -> dict[str, object]:
    return {
        "id": grant.id,
        "subject": grant.subject,
        "scope": grant.scope,
        "family": grant.family,
        "version": grant.version,
        "endpoint": grant.endpoint,
        "created_by": grant.created_by,
        "created_at": grant.created_at,
    }


def _grant_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subject", type=subject, help="user:NAME, esc:NAME or family:NAME")
    parser.add_argument("scope", choices=SCOPES)
    parser.add_argument("--family", type=arguments.job_name, help="only this job family")
    parser.add_argument("--version", type=arguments.version, help="only this version")
    parser.add_argument(
        "--endpoint", type=arguments.endpoint, help="only this path, e.g. /api/v1/perform"
    )
    json_flag(parser)


@command(
    "perms:grant", "grant a scope, optionally narrowed to a family, version, endpoint", _grant_args
)
async def _perms_grant(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    _check_subject_exists(ctx, args.subject)
    if (args.version or args.endpoint) and not args.family:
        raise CommandFailed("--version and --endpoint narrow a --family: name the family too")
    grant = ctx.services.store.grant(
        args.subject,
        args.scope,
        family=args.family,
        version=args.version,
        endpoint=args.endpoint,
        created_by=ctx.who.name,
    )
    narrowed = " ".join(x for x in (args.family, args.version, args.endpoint) if x) or "everything"
    ctx.audit("perms:grant", args.family, f"{grant.id}: {args.subject} {args.scope} on {narrowed}")
    return Result(
        _grant_json(grant),
        f"Granted {args.subject} {args.scope} on {narrowed} (grant {grant.id})\n",
    )


@command(
    "perms:revoke",
    "revoke a grant by its id",
    lambda p: p.add_argument("id", type=arguments.positive_int),
)
async def _perms_revoke(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    grant = ctx.services.store.grant_by_id(args.id)
    if grant is None:
        raise NotFound(f"no grant {args.id}")
    ctx.services.store.revoke_grant(grant)
    ctx.audit("perms:revoke", grant.family, f"{grant.id}: {grant.subject} {grant.scope}")
    return Result(_grant_json(grant), f"Revoked grant {grant.id} ({grant.subject} {grant.scope})\n")


def _list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "subject", type=subject, nargs="?", help="default: everyone's for admins, else your own"
    )
    json_flag(parser)


@command("perms:list", "grants (your own, or anyone's for admins)", _list_args)
async def _perms_list(ctx: CommandContext, args: argparse.Namespace) -> Result:
    is_admin = ctx.services.permissions.allowed(ctx.who, FULL_ACCESS)
    wanted = args.subject or (None if is_admin else ctx.who.subject)
    if wanted != ctx.who.subject:
        ctx.require_admin()
    grants = ctx.services.store.grants(wanted)
    data = [_grant_json(g) for g in grants]
    rows = [
        [
            g.id,
            g.subject,
            g.scope,
            g.family or "*",
            g.version or "*",
            g.endpoint or "*",
            g.created_by,
        ]
        for g in grants
    ]
    text = format_table(["ID", "SUBJECT", "SCOPE", "FAMILY", "VERSION", "ENDPOINT", "BY"], rows)
    return Result(data, text)


def _audit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", type=arguments.job_name, help="only this job")
    json_flag(parser)


@command(
    "audit:log", "who did what, when: deploys, deletes, config, grants, keys, users", _audit_args
)
async def _audit_log(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    events = ctx.services.store.audit_log(args.job)
    data = [
        {"at": e.at, "actor": e.actor, "action": e.action, "job": e.job, "detail": e.detail}
        for e in events
    ]
    rows = [[e.at, e.actor, e.action, e.job or "-", e.detail] for e in events]
    return Result(data, format_table(["AT", "WHO", "WHAT", "JOB", "DETAIL"], rows))
