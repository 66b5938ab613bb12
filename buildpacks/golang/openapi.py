"""The OpenAPI 3.0.3 document of a Go job, written at build time (the binary adds `servers`).

Go's `map[string]interface{}` says nothing about the arguments, so the request body is
described by the convention alone: an object (the plugin's `input`, the guide's `kwargs`), or
for the guide's form also an array (`args`).
"""

from __future__ import annotations

from typing import Any

from buildpacks.golang.signature import GUIDE_SIGNATURE, PLUGIN_SIGNATURE, Form

OPENAPI_VERSION = "3.0.3"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What went wrong"},
        "type": {"type": "string", "description": "Kind of error: BadRequest, error, panic…"},
    },
    "required": ["error", "type"],
}
TAGS = {
    "job": "The job's Perform, called with JSON",
    "platform": "Probes and metrics of the job wrapper",
}


def _body(form: Form) -> tuple[dict[str, Any], str]:
    if form is Form.PLUGIN:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": True,
            "description": "Perform's input",
        }
        return schema, f"Calls `{PLUGIN_SIGNATURE}` with the JSON object as `input`."
    kwargs = {
        "type": "object",
        "properties": {
            "args": {"type": "array", "items": {}, "description": "Perform's args"},
        },
        "additionalProperties": True,
        "description": "Perform's kwargs (the args key, if any, is its args)",
    }
    args = {"type": "array", "items": {}, "description": "Perform's args (kwargs empty)"}
    return {"oneOf": [kwargs, args]}, (
        f"Calls `{GUIDE_SIGNATURE}`: a JSON object is `kwargs` (its `args` key, an array, is"
        " `args`); a JSON array is `args`."
    )


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _probe(summary: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties}
    return {
        "tags": ["platform"],
        "summary": summary,
        "operationId": summary.lower(),
        "responses": {
            "200": {"description": summary, "content": {"application/json": {"schema": schema}}}
        },
    }


def openapi_document(*, title: str, version: str, form: Form) -> dict[str, Any]:
    """The whole document, without `servers`."""
    schema, description = _body(form)
    text, boolean = {"type": "string"}, {"type": "boolean"}
    timestamp = {"type": "integer", "description": "JOB_DEPLOYMENT_TIMESTAMP"}
    perform = {
        "tags": ["job"],
        "summary": "Call Perform",
        "description": description,
        "operationId": "perform",
        "requestBody": {"required": False, "content": {"application/json": {"schema": schema}}},
        "responses": {
            "200": {
                "description": "Perform's result, as JSON",
                "content": {"application/json": {"schema": {}}},
            },
            "400": _error("The body is not JSON, or not what the convention takes"),
            "413": _error("The body is larger than 64 MiB"),
            "500": _error("Perform returned an error (type error) or panicked (type panic)"),
        },
    }
    metrics = {
        "tags": ["platform"],
        "summary": "Metrics",
        "operationId": "metrics",
        "responses": {
            "200": {
                "description": "Prometheus metrics in the text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
    health = {
        "service": text,
        "job_name": text,
        "job_version": text,
        "git_version": text,
        "live": boolean,
        "ready": boolean,
        "status": text,
        "deployment_timestamp": timestamp,
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title or "job",
            "version": version or "0.0.0",
            "description": f"A Go job in the {form.value}'s Perform convention.",
        },
        "tags": [{"name": name, "description": about} for name, about in TAGS.items()],
        "paths": {
            "/api/v1/perform": {"post": perform},
            "/live": {"get": _probe("Live", {"live": boolean, "deployment_timestamp": timestamp})},
            "/ready": {"get": _probe("Ready", {"ready": boolean})},
            "/health": {"get": _probe("Health", health)},
            "/metrics": {"get": metrics},
        },
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }
