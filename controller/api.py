"""The controller's HTTP API (port 7102): the admin commands for programs, same tokens.

`POST /api/v1/commands/<name>` runs the command that `ssh ... <name>` runs, with its arguments
as a JSON object (`{"job": "adder", "pairs": ["A=1"]}`; `input` stands for stdin) and answers
`{"result": ..., "output": [lines]}`, or `{"error": "..."}` with 400, 401, 403 or 404.
`GET /api/v1/jobs` is `jobs:list`. Every request needs an `X-Racetrack-Auth` token.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from controller.accounts import NotAuthenticated
from controller.commands import COMMANDS, run_api_command
from controller.permissions import Principal
from controller.services import Services
from router.auth import token_from_request
from router.http_server import refuse_compressed_bodies

SERVICES_KEY = web.AppKey("services", Services)
MAX_BODY = 1024 * 1024


def _caller(request: web.Request) -> Principal:
    try:
        return request.app[SERVICES_KEY].accounts.authenticate(token_from_request(request))
    except NotAuthenticated as exc:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"service": "racetrack-controller", "status": "pass"})


async def _run(request: web.Request, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    return await run_api_command(request.app[SERVICES_KEY], _caller(request), name, body)


async def _command(request: web.Request) -> web.Response:
    if request.content_length and request.content_length > MAX_BODY:
        return web.json_response({"error": f"body larger than {MAX_BODY} bytes"}, status=413)
    raw = await request.read() if request.can_read_body else b""
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        return web.json_response({"error": f"body is not JSON: {exc}"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object of arguments"}, status=400)
    status, answer = await _run(request, request.match_info["name"], body)
    return web.json_response(answer, status=status)


async def _commands(request: web.Request) -> web.Response:
    _caller(request)
    return web.json_response({c.name: c.summary for c in COMMANDS.values()})


async def _jobs(request: web.Request) -> web.Response:
    status, answer = await _run(request, "jobs:list", {})
    return web.json_response(answer["result"] if status == 200 else answer, status=status)


def make_api_app(services: Services) -> web.Application:
    # bodies are small JSON: a compressed one is refused before it is inflated
    app = web.Application(client_max_size=MAX_BODY, middlewares=[refuse_compressed_bodies])
    app[SERVICES_KEY] = services
    app.router.add_get("/health", _health)
    app.router.add_get("/api/v1/jobs", _jobs)
    app.router.add_get("/api/v1/commands", _commands)
    app.router.add_post("/api/v1/commands/{name}", _command)
    return app
