"""The job's OpenAPI 3.0.3 document, made from its methods' signatures, type hints and docstrings.

Standard library only: this runs in the job's own virtualenv. Nothing a user can write may make
it raise: every type it cannot describe becomes `{}` (any value) with a description naming it.
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import copy
import dataclasses
import datetime
import enum
import inspect
import json
import re
import sys
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

OPENAPI_VERSION = "3.0.3"
API_PREFIX = "/api/v1/"
WEBVIEW_PATH = "/api/v1/webview/{path}"
SCHEMA_REF = "#/components/schemas/"
MAX_DEPTH = 40
MAX_DEFAULT_CHARS = 10_000

# OpenAPI 3.0 has no "null" type: this is its accepted spelling of "only null".
_NULL: dict[str, Any] = {"type": "object", "nullable": True, "enum": [None]}


def _null() -> dict[str, Any]:
    return {"type": "object", "nullable": True, "enum": [None]}


_BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
_PRIMITIVES: list[tuple[type, dict[str, Any]]] = [  # first match wins: bool before int
    (bool, {"type": "boolean"}),
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (str, {"type": "string"}),
    (bytes, _BINARY),
    (bytearray, _BINARY),
    (datetime.datetime, {"type": "string", "format": "date-time"}),
    (datetime.date, {"type": "string", "format": "date"}),
    (datetime.time, {"type": "string", "format": "time"}),
    (uuid.UUID, {"type": "string", "format": "uuid"}),
    (PurePath, {"type": "string"}),
]
_WRAPPERS = tuple(
    getattr(typing, name)
    for name in ("ClassVar", "Final", "Required", "NotRequired", "ReadOnly")
    if hasattr(typing, name)
)
_COMPOSED = frozenset({"anyOf", "oneOf", "allOf", "not", "$ref"})

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What went wrong"},
        "type": {"type": "string", "description": "Kind of error, e.g. the exception's class"},
    },
    "required": ["error", "type"],
}
ERROR_RESPONSES: dict[str, str] = {
    "400": "Bad request: the body is not a JSON object of the method's keyword arguments, "
    "the arguments do not fit its signature, or it rejected them with ValueError",
    "429": "Too many requests: more concurrent calls than max_concurrency plus its queue",
    "500": "The method raised an exception, or its result is not JSON serialisable",
    "503": "The job is not ready yet",
}
TAGS: dict[str, str] = {
    "job": "The job's methods, called with a JSON object of their keyword arguments",
    "static": "Static files served by the job",
    "webview": "The job's own web UI",
    "platform": "Probes and metrics of the job wrapper",
}


def openapi_document(
    *,
    title: str,
    version: str,
    description: str,
    endpoints: Mapping[str, Callable[..., Any]],
    examples: Mapping[str, Mapping[str, Any]],
    static_files: Sequence[str],
    static_dirs: Sequence[str],
    webview: bool,
) -> dict[str, Any]:
    """The whole document, without `servers` (the server adds it per request)."""
    components: dict[str, Any] = {"Error": copy.deepcopy(ERROR_SCHEMA)}
    schemas = _Schemas(components)
    ids = _OperationIds()
    paths: dict[str, dict[str, Any]] = {}
    for path, function in endpoints.items():
        operation = _job_operation(function, examples.get(path), schemas)
        _add(paths, path, "post", operation, ids.take(_slug(path)))
    for path in static_files:
        _add(paths, path, "get", _static_file_operation(path), ids.take("static_" + _slug(path)))
    for prefix in static_dirs:
        path = f"{_path_key(prefix).rstrip('/')}/{{path}}"
        operation = _static_dir_operation(prefix)
        _add(paths, path, "get", operation, ids.take("static_" + _slug(prefix)))
    if webview:
        _add(paths, WEBVIEW_PATH, "get", _webview_operation(), ids.take("webview"))
    for path, operation in _platform_operations().items():
        _add(paths, path, "get", operation, ids.take(_slug(path)))

    info: dict[str, Any] = {"title": str(title), "version": str(version)}
    if description:
        info["description"] = str(description)
    used = {tag for item in paths.values() for op in item.values() for tag in op["tags"]}
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "tags": [
            {"name": name, "description": text} for name, text in TAGS.items() if name in used
        ],
        "paths": paths,
        "components": {"schemas": components},
    }


def parameter_schema(function: Callable[..., Any]) -> dict[str, Any]:
    """The request-body schema of `function` alone. Dataclasses, TypedDicts and pydantic
    `$defs` are `$ref`s into the `components.schemas` it then carries (as the document does)."""
    components: dict[str, Any] = {}
    signature, hints = _signature_and_hints(function)
    schema = _body_schema(
        signature, hints, _parse_docstring(_getdoc(function)), _Schemas(components)
    )
    if components:
        schema["components"] = {"schemas": components}
    return schema


# paths and operations


def _add(
    paths: dict[str, dict[str, Any]],
    path: str,
    method: str,
    operation: dict[str, Any],
    operation_id: str,
) -> None:
    paths.setdefault(_path_key(path), {})[method] = {"operationId": operation_id, **operation}


def _path_key(path: str) -> str:
    path = str(path)
    return path if path.startswith("/") else "/" + path


def _slug(path: str) -> str:
    """`/api/v1/models/predict` -> `models_predict`: a stable base for an operationId."""
    path = _path_key(path)
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :]
    return re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"


class _OperationIds:
    def __init__(self) -> None:
        self._taken: set[str] = set()

    def take(self, base: str) -> str:
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}_{n}"
        self._taken.add(name)
        return name


def _job_operation(function: Callable[..., Any], example: Any, schemas: _Schemas) -> dict[str, Any]:
    """A POST operation; a method that defeats introspection still gets a generic one."""
    try:
        return _describe_callable(function, example, schemas)
    except Exception:
        body = {"type": "object", "additionalProperties": True}
        return _operation_shell(_Doc(), body, {}, example)


def _describe_callable(
    function: Callable[..., Any], example: Any, schemas: _Schemas
) -> dict[str, Any]:
    docs = _parse_docstring(_getdoc(function))
    signature, hints = _signature_and_hints(function)
    body = _body_schema(signature, hints, docs, schemas)
    returns: Any = inspect.Parameter.empty
    if signature is not None:
        returns = hints.get("return", signature.return_annotation)
    result = schemas.of(returns)
    return _operation_shell(docs, body, result, example)


def _operation_shell(
    docs: _Doc, body: dict[str, Any], result: dict[str, Any], example: Any
) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": body}
    ok, example = _jsonable(example)
    if ok and example is not None:
        media["example"] = example
    operation: dict[str, Any] = {"tags": ["job"]}
    if docs.summary:
        operation["summary"] = docs.summary
    if docs.description:
        operation["description"] = docs.description
    operation["requestBody"] = {
        "required": bool(body.get("required")),
        "content": {"application/json": media},
    }
    operation["responses"] = {
        "200": {
            "description": docs.returns or "Result",
            "content": {"application/json": {"schema": result}},
        },
        **_error_responses(),
    }
    return operation


def _error_responses() -> dict[str, Any]:
    return {
        status: {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": SCHEMA_REF + "Error"}}},
        }
        for status, text in ERROR_RESPONSES.items()
    }


def _file_responses(what: str) -> dict[str, Any]:
    return {
        "200": {"description": what, "content": {"*/*": {"schema": dict(_BINARY)}}},
        "404": {"description": "No such file"},
    }


def _path_parameter(description: str) -> dict[str, Any]:
    return {
        "name": "path",
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _static_file_operation(path: str) -> dict[str, Any]:
    return {
        "tags": ["static"],
        "summary": f"Static file {_path_key(path)}",
        "responses": _file_responses("The file"),
    }


def _static_dir_operation(prefix: str) -> dict[str, Any]:
    return {
        "tags": ["static"],
        "summary": f"Static files under {_path_key(prefix).rstrip('/')}/",
        "parameters": [_path_parameter("Path of the file, relative to the directory")],
        "responses": _file_responses("The file"),
    }


def _webview_operation() -> dict[str, Any]:
    return {
        "tags": ["webview"],
        "summary": "The job's own web UI",
        "description": "Pages and assets of the web app the job serves itself (its webview).",
        "parameters": [_path_parameter("Path within the job's web UI")],
        "responses": {
            "200": {
                "description": "A page or asset of the UI",
                "content": {"*/*": {"schema": dict(_BINARY)}},
            },
        },
    }


def _json_get(summary: str, schema: dict[str, Any], statuses: dict[str, str]) -> dict[str, Any]:
    responses = {
        status: {"description": text, "content": {"application/json": {"schema": schema}}}
        for status, text in statuses.items()
    }
    return {"tags": ["platform"], "summary": summary, "responses": responses}


def _platform_operations() -> dict[str, dict[str, Any]]:
    text = {"type": "string"}
    status = {"type": "string", "description": "starting, ready or failed"}
    error = {"type": "string", "description": "Why loading the entrypoint failed"}
    live = _object({"live": {"type": "boolean"}, "status": status, "error": error}, ["live"])
    ready = _object({"ready": {"type": "boolean"}, "status": status}, ["ready"])
    health = _object(
        {
            "service": text,
            "job_name": text,
            "job_version": text,
            "git_version": text,
            "status": {"type": "string", "description": "pass once ready"},
            "error": error,
        },
        ["status"],
    )
    metrics = {
        "200": {
            "description": "Prometheus metrics in the text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
    return {
        "/live": _json_get(
            "Liveness", live, {"200": "Alive", "500": "Loading the entrypoint failed"}
        ),
        "/ready": _json_get("Readiness", ready, {"200": "Ready", "503": "Not ready yet"}),
        "/health": _json_get("Health", health, {"200": "Healthy", "503": "Not ready yet"}),
        "/metrics": {"tags": ["platform"], "summary": "Metrics", "responses": metrics},
    }


# signatures


def _getdoc(obj: Any) -> str:
    try:
        return inspect.getdoc(obj) or ""
    except Exception:
        return ""


def _signature_and_hints(
    function: Callable[..., Any],
) -> tuple[inspect.Signature | None, dict[str, Any]]:
    try:
        signature = inspect.signature(function)
    except Exception:  # not callable, a builtin without one, or a raising __signature__
        return None, {}
    return signature, _function_hints(function)


def _function_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Resolved hints; when one cannot be resolved, resolve the others one by one."""
    try:
        return typing.get_type_hints(function, include_extras=False)
    except Exception:
        pass
    try:
        raw = getattr(function, "__annotations__", None)
        globalns = getattr(inspect.unwrap(function), "__globals__", None) or {}
        return {name: _resolve(hint, globalns, None) for name, hint in dict(raw or {}).items()}
    except Exception:
        return {}


def _class_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=False)
    except Exception:
        pass
    raw: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        annotations = vars(base).get("__annotations__")
        if isinstance(annotations, dict):
            raw.update(annotations)
    module = sys.modules.get(cls.__module__)
    globalns = dict(vars(module)) if module is not None else {}
    return {name: _resolve(hint, globalns, dict(vars(cls))) for name, hint in raw.items()}


def _resolve(hint: Any, globalns: dict[str, Any], localns: dict[str, Any] | None) -> Any:
    """One string annotation evaluated like `get_type_hints` does; left a string on failure."""
    if not isinstance(hint, str):
        return hint
    holder = types.SimpleNamespace(__annotations__={"hint": hint})
    try:
        return typing.get_type_hints(holder, globalns, localns)["hint"]
    except Exception:
        return hint


def _body_schema(
    signature: inspect.Signature | None,
    hints: dict[str, Any],
    docs: _Doc,
    schemas: _Schemas,
) -> dict[str, Any]:
    """A JSON object of keyword arguments; positional-only parameters and `*args` can't be
    passed that way, so they are left out."""
    if signature is None:
        return {"type": "object", "additionalProperties": True}
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            extra = True
            continue
        if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            continue
        schema = schemas.of(hints.get(param.name, param.annotation))
        if param.default is param.empty:
            required.append(param.name)
        else:
            schema = _with_default(schema, param.default)
        if docs.params.get(param.name):
            schema = _annotate(schema, description=docs.params[param.name])
        properties[param.name] = schema
    return _object(properties, required, additional=extra)


# schema helpers


def _object(
    properties: dict[str, Any],
    required: list[str],
    *,
    additional: bool | dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:  # OpenAPI 3.0 forbids an empty `required`
        schema["required"] = required
    if additional is not None:
        schema["additionalProperties"] = additional
    if description:
        schema["description"] = description
    return schema


def _annotate(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Add keywords; next to a `$ref` they would be ignored, so wrap it in `allOf`."""
    if "$ref" in schema:
        return {"allOf": [schema], **extra}
    return {**schema, **extra}


def _accepts_null(schema: dict[str, Any]) -> bool:
    if schema.get("nullable") is True:
        return True
    if "anyOf" in schema:
        return any(_accepts_null(s) for s in schema["anyOf"] if isinstance(s, dict))
    return not ({"type", "enum"} | _COMPOSED) & schema.keys()


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if _accepts_null(schema):
        return schema
    if "type" in schema and not _COMPOSED & schema.keys():
        out = {**schema, "nullable": True}
        if isinstance(out.get("enum"), list):
            out["enum"] = [*out["enum"], None]
        return out
    if isinstance(schema.get("anyOf"), list) and not (_COMPOSED - {"anyOf"}) & schema.keys():
        return {**schema, "anyOf": [*schema["anyOf"], _null()]}
    return {"anyOf": [schema, _null()]}


def _jsonable(value: Any) -> tuple[bool, Any]:
    """(True, plain JSON copy) for a value that survives JSON, else (False, None)."""
    try:
        if isinstance(value, enum.Enum):
            value = value.value
        text = json.dumps(value, allow_nan=False)
        if len(text) > MAX_DEFAULT_CHARS:
            return False, None
        return True, json.loads(text)
    except Exception:
        return False, None


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "integer": int,
    "number": (int, float),
    "string": str,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def _fits(schema: dict[str, Any], value: Any) -> bool:
    """A shallow check, so that the document never carries a default its schema rejects."""
    if isinstance(schema.get("enum"), list) and value not in schema["enum"]:
        return False
    if isinstance(schema.get("anyOf"), list):
        return any(_fits(member, value) for member in schema["anyOf"] if isinstance(member, dict))
    if isinstance(schema.get("allOf"), list):
        return all(_fits(member, value) for member in schema["allOf"] if isinstance(member, dict))
    expected = schema.get("type")
    if expected not in _JSON_TYPES:
        return True
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES[expected])


def _with_default(schema: dict[str, Any], default: Any) -> dict[str, Any]:
    ok, value = _jsonable(default)
    if not ok:
        return schema
    if value is None:
        return _annotate(_nullable(schema), default=None)
    return _annotate(schema, default=value) if _fits(schema, value) else schema


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _enum_schema(raw_values: Sequence[Any]) -> dict[str, Any]:
    values: list[Any] = []
    for raw in raw_values:
        ok, value = _jsonable(raw)
        if ok and value not in values:
            values.append(value)
    if not values:
        return {}
    kinds = {_json_type(v) for v in values if v is not None}
    if kinds == {"integer", "number"}:
        kinds = {"number"}
    schema: dict[str, Any] = {"type": kinds.pop()} if len(kinds) == 1 else {}
    schema["enum"] = values
    if None in values:
        schema["nullable"] = True
    return schema


def _enum_class(cls: type[enum.Enum]) -> dict[str, Any]:
    return _enum_schema([m.value if _jsonable(m.value)[0] else m.name for m in cls])


def _dedupe(schemas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique: list[dict[str, Any]] = []
    for schema in schemas:
        if schema not in unique:
            unique.append(schema)
    return unique


def _type_name(hint: Any) -> str:
    try:
        if isinstance(hint, type):
            module = "" if hint.__module__ == "builtins" else hint.__module__ + "."
            name = module + hint.__qualname__
        else:
            name = repr(hint)
    except Exception:
        name = "unknown"
    return name[:200]


def _unknown(hint: Any) -> dict[str, Any]:
    return {"description": f"Python type {_type_name(hint)}"}


def _component_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(name)) or "Schema"


def _class_doc(cls: type) -> str:
    """The class's own docstring, but not one dataclasses or NamedTuple made up."""
    doc = vars(cls).get("__doc__")
    if not isinstance(doc, str) or doc.startswith(cls.__name__ + "("):
        return ""
    return inspect.cleandoc(doc)


def _is_typeddict(cls: type) -> bool:
    if typing.is_typeddict(cls):
        return True  # typing_extensions' TypedDict has its own metaclass; duck-type it
    return issubclass(cls, dict) and hasattr(cls, "__required_keys__")


def _pydantic_schema(cls: type) -> dict[str, Any] | None:
    method = getattr(cls, "model_json_schema", None)
    if not callable(method):
        return None
    try:
        schema = method()
    except Exception:
        return None
    return schema if isinstance(schema, dict) else None


class _Schemas:
    """Type hints to OpenAPI 3.0 schemas. Dataclasses and TypedDicts become components, named
    before their fields are described, so self-references end as `$ref`s to them."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components
        self._names: dict[Any, str] = {}
        self._stack: list[Any] = []

    def of(self, hint: Any) -> dict[str, Any]:
        ref = self._known_ref(hint)
        if ref is not None:
            return ref
        if len(self._stack) >= MAX_DEPTH or any(hint is seen for seen in self._stack):
            return {"description": f"recursive {_type_name(hint)}"}
        self._stack.append(hint)
        try:
            return self._convert(hint)
        except Exception:
            return _unknown(hint)
        finally:
            self._stack.pop()

    def _known_ref(self, hint: Any) -> dict[str, Any] | None:
        try:
            name = self._names.get(hint)
        except Exception:  # unhashable
            return None
        return {"$ref": SCHEMA_REF + name} if name is not None else None

    def _convert(self, hint: Any) -> dict[str, Any]:
        if hint is None or hint is type(None):
            return _null()
        if hint is Any or hint is object or hint is inspect.Parameter.empty:
            return {}
        if isinstance(hint, str | typing.ForwardRef):
            return {}  # unresolved annotation
        origin = typing.get_origin(hint)
        if origin is not None:
            return self._generic(hint, origin, typing.get_args(hint))
        if isinstance(hint, typing.TypeVar):
            return self._type_var(hint)
        if type(hint).__name__ == "TypeAliasType":  # `type X = ...`, Python 3.12+
            return self.of(hint.__value__)
        if isinstance(hint, type):
            return self._class(hint)
        supertype = getattr(hint, "__supertype__", None)  # typing.NewType
        return self.of(supertype) if supertype is not None else _unknown(hint)

    def _generic(self, hint: Any, origin: Any, args: tuple[Any, ...]) -> dict[str, Any]:
        if origin is typing.Annotated or origin in _WRAPPERS:
            return self.of(args[0]) if args else {}
        if origin is typing.Union or origin is types.UnionType:
            return self._union(args)
        if origin is typing.Literal:
            return _enum_schema(args)
        if origin is tuple:
            return self._tuple(args, bare=not hasattr(hint, "__args__"))  # typing.Tuple
        if not isinstance(origin, type):
            return _unknown(hint)
        collection = self._collection(origin, args)
        if collection is not None:
            return collection
        schema = self._class(origin)  # a user's generic class, Box[int]
        return _unknown(hint) if schema == _unknown(origin) else schema

    def _type_var(self, var: typing.TypeVar) -> dict[str, Any]:
        if var.__bound__ is not None:
            return self.of(var.__bound__)
        if var.__constraints__:
            return self._union(var.__constraints__)
        return {}

    def _union(self, args: Sequence[Any]) -> dict[str, Any]:
        members = [a for a in args if a is not None and a is not type(None)]
        schemas = _dedupe([self.of(a) for a in members])
        if not schemas:
            return _null()
        result = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
        return _nullable(result) if len(members) < len(args) else result

    def _tuple(self, args: tuple[Any, ...], *, bare: bool = False) -> dict[str, Any]:
        if bare:
            return {"type": "array", "items": {}}
        if not args or args == ((),):
            return {"type": "array", "items": {}, "maxItems": 0}
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": self.of(args[0])}
        items = _dedupe([self.of(a) for a in args])
        return {
            "type": "array",
            "items": items[0] if len(items) == 1 else {"anyOf": items},
            "minItems": len(args),
            "maxItems": len(args),
        }

    def _collection(self, cls: type, args: tuple[Any, ...]) -> dict[str, Any] | None:
        if issubclass(cls, cabc.Mapping):
            if issubclass(cls, collections.Counter):
                return {"type": "object", "additionalProperties": {"type": "integer"}}
            values = self.of(args[-1]) if len(args) == 2 else True
            return {"type": "object", "additionalProperties": values}
        if issubclass(cls, tuple):
            return self._tuple(args, bare=not args)
        builtin = issubclass(cls, list | set | frozenset | collections.deque)
        if not builtin and not (
            cls.__module__ == "collections.abc" and issubclass(cls, cabc.Iterable)
        ):
            return None
        schema = {"type": "array", "items": self.of(args[0]) if args else {}}
        if issubclass(cls, cabc.Set):
            schema["uniqueItems"] = True
        return schema

    def _class(self, cls: type) -> dict[str, Any]:
        pydantic = _pydantic_schema(cls)
        if pydantic is not None:
            return self._hoist(pydantic)
        if dataclasses.is_dataclass(cls) or _is_typeddict(cls):
            return self._component(cls)
        if issubclass(cls, enum.Enum):
            return _enum_class(cls)
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # NamedTuple: a JSON array
            hints = _class_hints(cls)
            return self._tuple(tuple(hints.get(f, Any) for f in cls._fields))
        for base, schema in _PRIMITIVES:
            if issubclass(cls, base):
                return dict(schema)
        collection = self._collection(cls, ())
        return collection if collection is not None else _unknown(cls)

    # named types

    def _free_name(self, base: str) -> str:
        name, n = _component_name(base), 1
        while name in self.components:
            n += 1
            name = f"{_component_name(base)}_{n}"
        return name

    def _component(self, cls: type) -> dict[str, Any]:
        name = self._free_name(cls.__name__)
        self._names[cls] = name
        self.components[name] = {}  # taken before the fields, which may refer back to it
        outer, self._stack = self._stack, []  # the $ref breaks cycles through it
        try:
            if dataclasses.is_dataclass(cls):
                self.components[name] = self._dataclass(cls)
            else:
                self.components[name] = self._typeddict(cls)
        except Exception:
            self.components[name] = _unknown(cls)
        finally:
            self._stack = outer
        return {"$ref": SCHEMA_REF + name}

    def _dataclass(self, cls: type) -> dict[str, Any]:
        hints = _class_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in dataclasses.fields(cls):
            schema = self.of(hints.get(field.name, field.type))
            if field.default is not dataclasses.MISSING:
                schema = _with_default(schema, field.default)
            elif field.default_factory is dataclasses.MISSING:
                required.append(field.name)
            properties[field.name] = schema
        return _object(properties, required, description=_class_doc(cls))

    def _typeddict(self, cls: type) -> dict[str, Any]:
        hints = _class_hints(cls)
        required_keys = getattr(cls, "__required_keys__", frozenset(hints))
        properties = {name: self.of(hint) for name, hint in hints.items()}
        required = [name for name in hints if name in required_keys]
        return _object(properties, required, description=_class_doc(cls))

    def _hoist(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Move a pydantic schema's `$defs` into the components, under free names."""
        defs = schema.get("$defs")
        defs = defs if isinstance(defs, dict) else {}
        renames: dict[str, str] = {}
        for name, raw in defs.items():
            key = ("$defs", json.dumps(raw, sort_keys=True, default=str))
            if key not in self._names:
                self._names[key] = self._free_name(name)
                self.components[self._names[key]] = {}
            renames[name] = self._names[key]
        for name, raw in defs.items():
            self.components[renames[name]] = _to_oas30(raw, renames)
        return _to_oas30({k: v for k, v in schema.items() if k != "$defs"}, renames)


# JSON Schema (as pydantic writes it) to OpenAPI 3.0

_PLAIN_KEYWORDS = frozenset(
    {
        "title", "multipleOf", "maximum", "minimum", "maxLength", "minLength", "pattern",
        "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties", "required",
        "enum", "description", "format", "default", "nullable", "readOnly", "writeOnly",
        "example", "deprecated",
    }
)  # fmt: skip
_REF_PREFIXES = ("#/$defs/", "#/definitions/", SCHEMA_REF)


def _ref(ref: Any, renames: dict[str, str]) -> str:
    ref = str(ref)
    for prefix in _REF_PREFIXES:
        if ref.startswith(prefix):
            name = ref[len(prefix) :]
            return SCHEMA_REF + renames.get(name, _component_name(name))
    return ref


def _to_oas30(schema: Any, renames: dict[str, str], depth: int = 0) -> dict[str, Any]:
    """Keep what OpenAPI 3.0 knows; rewrite `null` types, `const`, `prefixItems`, numeric
    `exclusiveMinimum`, `examples` and `$defs` references; drop the rest."""
    if not isinstance(schema, dict) or depth > 2 * MAX_DEPTH:
        return {}

    def sub(value: Any) -> dict[str, Any]:
        return _to_oas30(value, renames, depth + 1)

    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _PLAIN_KEYWORDS or (isinstance(key, str) and key.startswith("x-")):
            out[key] = value
        elif key == "$ref":
            out["$ref"] = _ref(value, renames)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            out[key] = [sub(v) for v in value]
        elif key in ("not", "items") and isinstance(value, dict):
            out[key] = sub(value)
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else sub(value)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {str(name): sub(v) for name, v in value.items()}
        elif key == "const":
            out["enum"] = [value]
        elif key == "examples" and isinstance(value, list) and value:
            out["example"] = value[0]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            _exclusive_bound(out, key, value)
        elif key == "type":
            _set_type(out, value)
        elif key == "discriminator" and isinstance(value, dict):
            _set_discriminator(out, value, renames)
    if "prefixItems" in schema and isinstance(schema["prefixItems"], list):
        items = _dedupe([sub(v) for v in schema["prefixItems"]])
        out.setdefault("items", items[0] if len(items) == 1 else {"anyOf": items})
    if out.get("type") == "array":
        out.setdefault("items", {})
    return _tidy(out)


def _exclusive_bound(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, bool):
        out[key] = value
    elif isinstance(value, int | float):
        out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
        out[key] = True


def _set_type(out: dict[str, Any], value: Any) -> None:
    kinds = value if isinstance(value, list) else [value]
    real = [k for k in kinds if k in _JSON_TYPES]  # OpenAPI 3.0's types: not "null"
    if len(real) == 1:
        out["type"] = real[0]
    elif real:
        out["anyOf"] = [{"type": k} for k in real]
    if "null" in kinds:
        out["x-null"] = True  # resolved by _tidy


def _set_discriminator(out: dict[str, Any], value: dict[str, Any], renames: dict[str, str]) -> None:
    if "propertyName" not in value:
        return
    result: dict[str, Any] = {"propertyName": value["propertyName"]}
    mapping = value.get("mapping")
    if isinstance(mapping, dict):
        result["mapping"] = {str(k): _ref(v, renames) for k, v in mapping.items()}
    out["discriminator"] = result


def _tidy(out: dict[str, Any]) -> dict[str, Any]:
    """Turn `{type: null}` members into nullability and keep `$ref` alone in its object."""
    wants_null = out.pop("x-null", False)
    if isinstance(out.get("anyOf"), list):
        members = [m for m in out["anyOf"] if m != _NULL]
        if len(members) < len(out["anyOf"]):
            wants_null = True
            rest = {k: v for k, v in out.items() if k != "anyOf"}
            if not members:
                out = {**rest, **_null()}
            else:
                base = members[0] if len(members) == 1 else {"anyOf": members}
                base = _nullable(base) if "$ref" in base else base
                out = {**rest, **base}
    if wants_null:
        if out == {}:
            out = _null()
        elif not _accepts_null(out):
            out = _nullable(out)
    if "$ref" in out and len(out) > 1:
        out = _annotate({"$ref": out.pop("$ref")}, **out)
    return out


# docstrings


@dataclasses.dataclass
class _Doc:
    summary: str = ""
    description: str = ""
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    returns: str = ""


_REST_PARAM = re.compile(
    r"^:(?:param|parameter|arg|argument|key|keyword|kwarg)\s+(?:[^:]*\s)?\**(\w+)\s*:(.*)$"
)
_REST_RETURN = re.compile(r"^:returns?:(.*)$")
_REST_IGNORED = re.compile(r"^:(?:type|rtype|vartype)\b[^:]*:")
_GOOGLE_PARAMS = re.compile(
    r"^(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Kwargs|"
    r"Other Parameters):\s*$"
)
_GOOGLE_RETURNS = re.compile(r"^(?:Returns?|Yields?):\s*(.*)$")
_GOOGLE_ENTRY = re.compile(r"^\**(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_NUMPY_PARAMS = ("Parameters", "Other Parameters", "Keyword Arguments")
_NUMPY_RETURNS = ("Returns", "Yields")
_RETURN_TYPE = re.compile(r"^[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*:\s+(.+)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(lines: Sequence[str]) -> str:
    return " ".join(line.strip() for line in lines if line.strip())


def _parse_docstring(doc: str) -> _Doc:
    """Summary, description and the texts of parameters and return value, from reST
    (`:param x:`), Google (`Args:`) or NumPy (`Parameters` + `----------`) docstrings."""
    result = _Doc()
    lines = doc.expandtabs().splitlines()
    kept: list[str] = []
    i = 0
    while i < len(lines):
        consumed = (
            _rest_field(lines, i, result)
            or _google_section(lines, i, result)
            or _numpy_section(lines, i, result)
        )
        if consumed:
            i += consumed
        else:
            kept.append(lines[i])
            i += 1
    text = "\n".join(kept).strip()
    summary, _, rest = text.partition("\n")
    result.summary = summary.strip()
    result.description = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", rest).strip()
    return result


def _continuation(lines: Sequence[str], start: int, indent: int) -> int:
    """Index past the lines after `start` that are indented deeper than `indent`."""
    end = start + 1
    while end < len(lines) and lines[end].strip() and _indent(lines[end]) > indent:
        end += 1
    return end


def _rest_field(lines: Sequence[str], i: int, result: _Doc) -> int:
    line = lines[i].strip()
    if not line.startswith(":"):
        return 0
    end = _continuation(lines, i, _indent(lines[i]))
    param = _REST_PARAM.match(line)
    returns = _REST_RETURN.match(line)
    if param:
        result.params[param.group(1)] = _join([param.group(2), *lines[i + 1 : end]])
    elif returns:
        result.returns = _join([returns.group(1), *lines[i + 1 : end]])
    elif not _REST_IGNORED.match(line):
        return 0
    return end - i


def _section_end(lines: Sequence[str], start: int, indent: int) -> int:
    """Index past the blank or deeper-indented lines that follow a section header."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    return end


def _entries(lines: Sequence[str]) -> list[list[str]]:
    """Split a section body into entries: lines at the body's indent start one."""
    body = [line for line in lines if line.strip()]
    if not body:
        return []
    indent = min(_indent(line) for line in body)
    entries: list[list[str]] = []
    for line in body:
        if _indent(line) == indent or not entries:
            entries.append([line.strip()])
        else:
            entries[-1].append(line.strip())
    return entries


def _google_section(lines: Sequence[str], i: int, result: _Doc) -> int:
    header = lines[i].strip()
    params = _GOOGLE_PARAMS.match(header)
    returns = _GOOGLE_RETURNS.match(header)
    if not params and not returns:
        return 0
    end = _section_end(lines, i, _indent(lines[i]))
    body = lines[i + 1 : end]
    if params:
        for entry in _entries(body):
            match = _GOOGLE_ENTRY.match(entry[0])
            if match:
                result.params[match.group(1)] = _join([match.group(2), *entry[1:]])
    elif returns:
        text = _join([returns.group(1), *body])
        typed = _RETURN_TYPE.match(text)
        result.returns = typed.group(1) if typed else text
    return end - i


def _numpy_section(lines: Sequence[str], i: int, result: _Doc) -> int:
    header = lines[i].strip()
    if header not in (*_NUMPY_PARAMS, *_NUMPY_RETURNS):
        return 0
    if i + 1 >= len(lines) or not _NUMPY_UNDERLINE.match(lines[i + 1]):
        return 0
    end = i + 2
    while end < len(lines) and not (
        end + 1 < len(lines) and lines[end].strip() and _NUMPY_UNDERLINE.match(lines[end + 1])
    ):
        end += 1
    entries = _entries(lines[i + 2 : end])
    if header in _NUMPY_PARAMS:
        for entry in entries:
            name = entry[0].split(":", 1)[0].strip().lstrip("*")
            if name.isidentifier():
                result.params[name] = _join(entry[1:])
    else:
        result.returns = _join([line for entry in entries for line in entry[1:]])
    return end - i
