"""The controller's HTTP API (port 7102): the admin operations for programs, same tokens."""

from __future__ import annotations

import json

from aiohttp import web

from controller.accounts import NotAuthenticated
from controller.jobs import list_jobs
from controller.services import Services
from controller.store import User
from router.auth import token_from_request

SERVICES_KEY = web.AppKey("services", Services)


def _authenticated(request: web.Request) -> User | None:
    """The caller, or None when auth is off; raises 401 for a missing or unknown token."""
    services = request.app[SERVICES_KEY]
    if not services.auth_required:
        return None
    try:
        return services.accounts.authenticate(token_from_request(request))
    except NotAuthenticated as exc:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"service": "racetrack-controller", "status": "pass"})


async def _jobs(request: web.Request) -> web.Response:
    _authenticated(request)
    services = request.app[SERVICES_KEY]
    rows = await list_jobs(services.store, services.deployer)
    return web.json_response([row.to_json() for row in rows])


def make_api_app(services: Services) -> web.Application:
    app = web.Application()
    app[SERVICES_KEY] = services
    app.router.add_get("/health", _health)
    app.router.add_get("/api/v1/jobs", _jobs)
    return app
