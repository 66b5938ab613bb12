"""People and machines: users, their SSH keys, API tokens, External Service Consumers."""

from __future__ import annotations

import argparse
from typing import Any

from controller.accounts import BadPublicKey, read_public_key
from controller.commands import arguments
from controller.commands.registry import (
    MAX_INPUT_BYTES,
    CommandContext,
    CommandFailed,
    NotFound,
    Result,
    command,
    format_table,
    json_flag,
)
from controller.errors import DeployFailed
from controller.store import User


def _user(ctx: CommandContext, name: str) -> User:
    user = ctx.services.store.user_by_name(name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def _may_manage(ctx: CommandContext, user: User) -> None:
    """Yourself, or anyone if you are an admin."""
    if not (ctx.who.kind == "user" and ctx.who.name == user.name):
        ctx.require_admin()


# users


def _add_user_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", type=arguments.user_name)
    parser.add_argument("--admin", action="store_true", help="full access to everything")


@command("users:add", "add a user (then give them a key: keys:add NAME)", _add_user_args)
async def _users_add(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    if ctx.services.single_user:
        raise CommandFailed(
            "this platform runs jobs without isolation (--insecure-single-user): a second user"
            " could act as any other; restart it with job isolation to add users"
        )
    if ctx.services.store.user_by_name(args.name) is not None:
        raise CommandFailed(f"user {args.name!r} exists already")
    user = ctx.services.accounts.create_user(args.name, is_admin=args.admin)
    ctx.audit("users:add", detail=f"{user.name}{' (admin)' if user.is_admin else ''}")
    return Result(
        {"name": user.name, "admin": user.is_admin},
        f"Added {'admin ' if user.is_admin else ''}user {user.name}."
        f" Give them a key: ssh ... keys:add {user.name} < their_key.pub\n",
    )


@command("users:list", "the users", json_flag)
async def _users_list(ctx: CommandContext, _args: argparse.Namespace) -> Result:
    ctx.require_admin()
    store = ctx.services.store
    users = store.users()
    keys = {u.name: len(store.keys(u)) for u in users}
    data = [
        {"name": u.name, "admin": u.is_admin, "keys": keys[u.name], "created_at": u.created_at}
        for u in users
    ]
    rows = [[d["name"], "yes" if d["admin"] else "no", d["keys"], d["created_at"]] for d in data]
    return Result(data, format_table(["NAME", "ADMIN", "KEYS", "CREATED"], rows))


@command(
    "users:remove",
    "remove a user and their keys",
    lambda p: p.add_argument("name", type=arguments.user_name),
)
async def _users_remove(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    user = _user(ctx, args.name)
    if user.is_admin and len(ctx.services.store.admins()) == 1:
        raise CommandFailed(f"{user.name} is the last admin; add another admin first")
    families = ctx.services.store.remove_user(user, heir=ctx.who.name)
    handed = f"; their jobs now belong to {ctx.who.name}: {', '.join(families)}" if families else ""
    ctx.audit("users:remove", detail=user.name + handed)
    return Result(
        {"name": user.name, "families_now_owned_by": ctx.who.name, "families": families},
        f"Removed user {user.name} with their keys and grants{handed}\n",
    )


# keys


@command(
    "keys:add",
    "add an SSH public key (on stdin) to a user: yourself, or anyone for admins",
    lambda p: p.add_argument("user", type=arguments.user_name),
)
async def _keys_add(ctx: CommandContext, args: argparse.Namespace) -> Result:
    user = _user(ctx, args.user)
    _may_manage(ctx, user)
    raw = await ctx.output.read_input(MAX_INPUT_BYTES)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CommandFailed("the key on stdin is not an OpenSSH public key (not ASCII)") from None
    if not text.strip():
        raise CommandFailed("no key on stdin: keys:add NAME < key.pub")
    try:
        key = read_public_key(text, "the key on stdin")
    except BadPublicKey as exc:
        raise CommandFailed(str(exc)) from None
    fingerprint = key.get_fingerprint("sha256")
    store = ctx.services.store
    if store.key_by_fingerprint(fingerprint) is not None:
        raise CommandFailed(f"the key {fingerprint} is registered already")
    store.add_key(user, fingerprint, key.export_public_key("openssh").decode().strip())
    ctx.audit("keys:add", detail=f"{user.name} {fingerprint}")
    return Result(
        {"user": user.name, "fingerprint": fingerprint}, f"{fingerprint} added for {user.name}\n"
    )


def _keys_list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", type=arguments.user_name, nargs="?", help="default: yours")
    json_flag(parser)


@command("keys:list", "SSH key fingerprints (yours, or a user's for admins)", _keys_list_args)
async def _keys_list(ctx: CommandContext, args: argparse.Namespace) -> Result:
    name = args.user or ctx.who.name
    user = _user(ctx, name)
    _may_manage(ctx, user)
    keys = ctx.services.store.keys(user)
    data = [{"user": k.user, "fingerprint": k.fingerprint, "added_at": k.created_at} for k in keys]
    rows = [[d["user"], d["fingerprint"], d["added_at"]] for d in data]
    return Result(data, format_table(["USER", "FINGERPRINT", "ADDED"], rows))


@command(
    "keys:remove",
    "remove an SSH key by its fingerprint",
    lambda p: p.add_argument("fingerprint"),
)
async def _keys_remove(ctx: CommandContext, args: argparse.Namespace) -> Result:
    store = ctx.services.store
    key = store.key_by_fingerprint(args.fingerprint)
    if key is None:
        raise NotFound(f"no key {args.fingerprint!r}")
    owner = _user(ctx, key.user)
    _may_manage(ctx, owner)
    admins_with_keys = [a for a in store.admins() if store.keys(a)]
    if owner.is_admin and admins_with_keys == [owner] and len(store.keys(owner)) == 1:
        raise CommandFailed("that is the last key of the last admin; add another first")
    store.remove_key(key.fingerprint)
    ctx.audit("keys:remove", detail=f"{key.user} {key.fingerprint}")
    return Result(
        {"user": key.user, "fingerprint": key.fingerprint}, f"Removed {key.fingerprint}\n"
    )


# tokens


@command("auth:token", "print your API token (header X-Racetrack-Auth)")
async def _auth_token(ctx: CommandContext, _args: argparse.Namespace) -> Result:
    if ctx.who.kind != "user":
        raise CommandFailed(f"{ctx.who.display} has no user token to show")
    token = ctx.services.accounts.token_for(_user(ctx, ctx.who.name))
    return Result({"token": token}, token + "\n")


def _create_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("esc", type=arguments.user_name, metavar="esc-name")
    json_flag(parser)


@command(
    "tokens:create",
    "create an External Service Consumer's token (it may do nothing until granted)",
    _create_args,
)
async def _tokens_create(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    ctx.services.store.ensure_esc(args.esc, ctx.who.name)
    row, token = ctx.services.accounts.create_token(f"esc:{args.esc}", ctx.who.name)
    ctx.audit("tokens:create", detail=f"esc:{args.esc} token {row.id}")
    return Result(
        {"id": row.id, "subject": row.subject, "token": token},
        f"{token}\n(token {row.id} of esc:{args.esc}; grant it what it needs: perms:grant"
        f" esc:{args.esc} call_job --family JOB)\n",
    )


@command(
    "tokens:list", "API tokens of ESCs and job families (never the tokens themselves)", json_flag
)
async def _tokens_list(ctx: CommandContext, _args: argparse.Namespace) -> Result:
    ctx.require_admin()
    tokens = ctx.services.store.tokens()
    data = [
        {
            "id": t.id,
            "subject": t.subject,
            "created_by": t.created_by,
            "created_at": t.created_at,
            "revoked_at": t.revoked_at,
        }
        for t in tokens
    ]
    rows = [
        [d["id"], d["subject"], d["created_by"], d["created_at"], d["revoked_at"] or "-"]
        for d in data
    ]
    return Result(data, format_table(["ID", "SUBJECT", "BY", "CREATED", "REVOKED"], rows))


@command(
    "tokens:revoke",
    "revoke an ESC's or a job family's token",
    lambda p: p.add_argument("id", type=arguments.positive_int),
)
async def _tokens_revoke(ctx: CommandContext, args: argparse.Namespace) -> Result:
    ctx.require_admin()
    token = ctx.services.store.token_by_id(args.id)
    if token is None:
        raise NotFound(f"no token {args.id}")
    if token.revoked_at is not None:
        raise CommandFailed(f"token {args.id} was revoked already ({token.revoked_at})")
    ctx.services.store.revoke_token(token)
    ctx.audit("tokens:revoke", detail=f"{token.subject} token {token.id}")
    text = f"Revoked token {token.id} of {token.subject}\n"
    data: dict[str, Any] = {"id": token.id, "subject": token.subject, "restarted": []}
    kind, _, job = token.subject.partition(":")
    operations = ctx.services.releases
    if kind == "family" and any(s.release.job == job for s in operations.serving):
        # its instances hold the revoked token as AUTH_TOKEN: fresh ones get a new token
        try:
            releases = await operations.restart(job, None, ctx.who.name, ctx.output.line)
        except DeployFailed as exc:
            raise CommandFailed(
                f"revoked token {token.id}, but restarting {job} with a new token failed ({exc});"
                f" its calls to other jobs are refused until it restarts: jobs:restart {job}"
            ) from None
        ctx.audit("jobs:restart", job, ", ".join(r.label for r in releases))
        data["restarted"] = [r.label for r in releases]
        text += "".join(
            f"{job} {r.version} now serves {r.label} with a new token\n" for r in releases
        )
    return Result(data, text)
