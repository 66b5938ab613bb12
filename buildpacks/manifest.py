"""The `job.yaml` manifest: Racetrack's schema, validated with every error reported at once.

Errors name the field and the offending value, e.g.
``resources.memory_max: 'lots' is not a quantity like 512Mi``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

# Racetrack's job names: letters (either case), digits, '-', '_' and '.', starting with a letter
# or digit, 1-63 characters; never `..`, never ending in `.git` (that is the repository's suffix)
JOB_NAME_RE = re.compile(r"^(?!.*\.\.)(?!.*\.git$)[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
JOB_NAME_RULE = (
    "letters, digits, '-', '_' and '.', 1-63 characters, starting with a letter or digit,"
    " without '..'"
)
# semver.org's official pattern: MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MEMORY_RE = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
CPU_RE = re.compile(r"^\d+(\.\d+)?m?$")
DEBIAN_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")

JOB_TYPES = ("python3", "docker-http", "docker-proxy", "golang")
MAX_MANIFEST_BYTES = 256 * 1024
MAX_YAML_DEPTH = 32  # a real manifest nests 3 or 4 levels deep
MAX_YAML_NODES = 10_000  # and holds a few hundred values
MAX_REPLICAS = 50
MAX_PUBLIC_ENDPOINTS = 64
MAX_ENDPOINT_CHARS = 1024


ExtraT = TypeVar("ExtraT", bound=BaseModel)


class ManifestError(Exception):
    """A manifest that cannot be used; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_path(value: str) -> str:
    """A path inside the job's directory: relative, no `..`, no control characters."""
    if (
        any(ord(c) < 32 for c in value)
        or value.startswith("/")
        or ".." in value.split("/")
        or not value.strip()
    ):
        raise ValueError("is not a relative path inside the repository")
    return value


def endpoint_problem(path: str) -> str | None:
    """Why `path` cannot be a public endpoint (None: it can). It is written as the job sees it,
    decoded: the router matches the decoded request path against it on segment boundaries, and
    refuses to match any path that could be read as another one (see router/paths.py)."""
    if not path.startswith("/"):
        return "is not a path starting with '/'"
    if len(path) > MAX_ENDPOINT_CHARS:
        return f"is longer than {MAX_ENDPOINT_CHARS} characters"
    if not path.isprintable():
        return "has a control character"
    for mark, what in (("%", "a '%'"), ("\\", "a backslash"), ("?", "a '?'"), ("#", "a '#'")):
        if mark in path:
            return f"has {what}: write the path as the job sees it, decoded, without a query"
    segments = path.split("/")[1:]
    if segments[-1] == "" and len(segments) > 1:
        segments.pop()  # one trailing slash
    if "" in segments and path != "/":
        return "has an empty segment ('//')"
    if any(segment.partition(";")[0] in (".", "..") for segment in segments):
        return "has a '.' or '..' segment"
    return None


def _public_endpoint(value: str) -> str:
    problem = endpoint_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class GitSection(_Strict):
    remote: str | None = None
    branch: str | None = None
    directory: str = "."

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        return _relative_path(value)


class Resources(_Strict):
    memory_min: str | None = None
    memory_max: str | None = None
    cpu_min: str | None = None
    cpu_max: str | None = None

    @field_validator("memory_min", "memory_max", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not MEMORY_RE.fullmatch(str(value)):
            raise ValueError("is not a quantity like 512Mi")
        return str(value)

    @field_validator("cpu_min", "cpu_max", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not CPU_RE.fullmatch(str(value)):
            raise ValueError("is not a CPU quantity like 500m or 2")
        return str(value)


class Python3Extra(_Strict):
    """`jobtype_extra` of the python3 job type (Racetrack's convention)."""

    entrypoint_path: str
    entrypoint_class: str | None = None
    requirements_path: str | None = None
    python_version: str | None = None
    check_requirements: bool = True
    max_concurrency: int | None = Field(default=None, ge=1)
    max_concurrency_queue: int | None = Field(default=None, ge=0)
    home_page: str = "/docs"

    @field_validator("entrypoint_path", "requirements_path")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value)

    @field_validator("home_page")
    @classmethod
    def _home_page(cls, value: str) -> str:
        if not value.startswith("/") or not value.isprintable() or " " in value:
            raise ValueError("is not a path of the job starting with '/', like /docs")
        return value

    @field_validator("entrypoint_class")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not value.isidentifier():
            raise ValueError("is not a Python class name")
        return value


class DockerHttpExtra(_Strict):
    """`jobtype_extra` of docker-http: your Dockerfile, your server on `$PORT`."""

    dockerfile_path: str = "Dockerfile"
    health_path: str | None = None

    @field_validator("dockerfile_path")
    @classmethod
    def _dockerfile(cls, value: str) -> str:
        return _relative_path(value)

    @field_validator("health_path")
    @classmethod
    def _health(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("is not a path starting with '/'")
        return value


class DockerProxyExtra(DockerHttpExtra):
    """`jobtype_extra` of docker-proxy: Racetrack's Dockerfile jobs, server on a fixed port."""

    user_module_port: int = Field(default=7001, ge=1, le=65535)


class GolangExtra(_Strict):
    """`jobtype_extra` of golang: Racetrack's `Perform` convention in the root package."""

    gomod: str = "go.mod"

    @field_validator("gomod")
    @classmethod
    def _gomod(cls, value: str) -> str:
        return _relative_path(value)


# Older Racetrack manifests: where each section moved.
RENAMED_FIELDS = {
    "lang": "jobtype",
    "python": "jobtype_extra",
    "golang": "jobtype_extra",
    "wrapper_properties": "jobtype_extra",
    "docker": "jobtype_extra",
}

# Racetrack's older `python:` section is still read as python3's `jobtype_extra` (with a warning).
PYTHON_ALIAS = "python"
PYTHON_ALIAS_WARNING = "the python section is deprecated; rename it to jobtype_extra"

# Every job type's `jobtype_extra`, validated with the rest of the manifest.
EXTRA_MODELS: dict[str, type[BaseModel]] = {
    "python3": Python3Extra,
    "docker-http": DockerHttpExtra,
    "docker-proxy": DockerProxyExtra,
    "golang": GolangExtra,
}


def _env_mapping(value: Any) -> Any:
    """Environment values may be written as YAML scalars; they become strings."""
    if not isinstance(value, dict):
        return value
    result: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, int | float):
            item = str(item)
        result[key] = item
    return result


# Set by the platform, or deciding what code a process loads: never the user's to set.
RESERVED_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "PORT",
        "LISTEN_HOST",
        "PUB_URL",
        "AUTH_TOKEN",
        "GIT_VERSION",
        "ENTRYPOINT_PATH",
        "ENTRYPOINT_CLASS",
        "MAX_CONCURRENCY",
        "MAX_CONCURRENCY_QUEUE",
        "HOME_PAGE",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONNOUSERSITE",
        "PYTHONSAFEPATH",
        "PYTHONPLATLIBDIR",
        "PYTHONEXECUTABLE",
        "PYTHONDONTWRITEBYTECODE",
    }
)
RESERVED_ENV_PREFIXES = ("JOB_", "RACETRACK_", "LD_")


def reserved_env(name: str) -> str | None:
    """Why `name` may not be set by a job's manifest, secret env files or config (None: it
    may). The platform's own variables always win, and these decide what a process loads."""
    if name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES):
        return f"{name} is reserved: the platform sets it, or it changes what code a process loads"
    return None


def _check_env_names(value: dict[str, str]) -> dict[str, str]:
    bad = [name for name in value if not ENV_NAME_RE.fullmatch(name)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not an environment variable name")
    reserved = next((why for name in value if (why := reserved_env(name))), None)
    if reserved:
        raise ValueError(reserved)
    return value


class Manifest(_Strict):
    name: str
    jobtype: str
    owner_email: str
    version: str = "0.0.1"
    git: GitSection | None = None
    extends: str | None = None
    jobtype_extra: dict[str, Any] = Field(default_factory=dict)
    build_env: dict[str, str] = Field(default_factory=dict)
    runtime_env: dict[str, str] = Field(default_factory=dict)
    secret_build_env_file: str | None = None
    secret_runtime_env_file: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    public_endpoints: list[Annotated[str, AfterValidator(_public_endpoint)]] = Field(
        default_factory=list, max_length=MAX_PUBLIC_ENDPOINTS
    )
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    resources: Resources | None = None
    system_dependencies: list[str] = Field(default_factory=list)
    infrastructure_target: str | None = None
    image_type: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not JOB_NAME_RE.fullmatch(value):
            raise ValueError(f"is not a job name ({JOB_NAME_RULE})")
        return value

    @field_validator("jobtype")
    @classmethod
    def _jobtype(cls, value: str) -> str:
        base = value.split(":", 1)[0]
        if base not in JOB_TYPES:
            raise ValueError(f"is not a job type (known: {', '.join(JOB_TYPES)})")
        return value

    @field_validator("owner_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL_RE.fullmatch(value):
            raise ValueError("is not an email address")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if not isinstance(value, str) or not SEMVER_RE.fullmatch(value):
            raise ValueError("is not a semantic version like 1.2.3")
        return value

    @field_validator("build_env", "runtime_env", mode="before")
    @classmethod
    def _env_scalars(cls, value: Any) -> Any:
        return _env_mapping(value)

    @field_validator("build_env", "runtime_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_env_names(value)

    @field_validator("secret_build_env_file", "secret_runtime_env_file")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value)

    @field_validator("extends")
    @classmethod
    def _extends(cls, value: str | None) -> str | None:
        """Relative to the manifest's directory; `../base.yaml` is fine in a monorepo (the
        loader checks that it stays inside the repository)."""
        if value is not None and (
            any(ord(c) < 32 for c in value) or value.startswith("/") or not value.strip()
        ):
            raise ValueError("is not a relative path inside the repository")
        return value

    @field_validator("system_dependencies")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        for package in value:
            if not DEBIAN_PACKAGE_RE.fullmatch(package):
                raise ValueError(f"{package!r} is not a Debian package name")
        return value

    @property
    def jobtype_base(self) -> str:
        """`python3` for `python3:2.4.0`: Racetrack manifests pin a job type version."""
        return self.jobtype.split(":", 1)[0]

    def extra(self) -> BaseModel | None:
        """`jobtype_extra` parsed by its job type's model (already validated by `parse`)."""
        model = EXTRA_MODELS.get(self.jobtype_base)
        return None if model is None else model.model_validate(self.jobtype_extra)

    def extra_as(self, model: type[ExtraT]) -> ExtraT:
        """`jobtype_extra` as the model its job type uses (a buildpack asks for its own)."""
        extra = self.extra()
        if not isinstance(extra, model):
            raise ManifestError([f"jobtype: {self.jobtype!r} has no {model.__name__}"])
        return extra

    @property
    def python3(self) -> Python3Extra:
        return self.extra_as(Python3Extra)


def _field_part(part: Any) -> str:
    text = str(part)
    return text if text.replace("_", "").replace("-", "").isalnum() else repr(part)


def _describe(error: Any, prefix: tuple[Any, ...] = (), extra_field: str = "jobtype_extra") -> str:
    """One readable line per pydantic error: `field.path: 'value' reason`. `extra_field` is
    `jobtype_extra` as the manifest spells it (`python` in older Racetrack manifests)."""
    parts = [*prefix, *error["loc"]]
    if parts and parts[0] == "jobtype_extra":
        parts[0] = extra_field
    loc = ".".join(_field_part(part) for part in parts) or "job.yaml"
    kind = error["type"]
    if kind == "missing":
        return f"{loc}: required field is missing"
    if kind == "extra_forbidden":
        renamed = RENAMED_FIELDS.get(loc)
        if renamed:
            return f"{loc}: an older Racetrack field; write it as {renamed}"
        return f"{loc}: unknown field"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    else:
        message = message[0].lower() + message[1:]
    return f"{loc}: {error['input']!r} {message}"


def _jobtype_base(data: dict[str, Any]) -> str | None:
    jobtype = data.get("jobtype")
    return str(jobtype).split(":", 1)[0] if jobtype else None


def _read_python_alias(data: dict[str, Any]) -> tuple[dict[str, Any], str, list[str]]:
    """A python3 manifest's `python:` section is its `jobtype_extra`: (the data with it renamed,
    the field as written, errors). Other job types keep refusing it as a renamed field."""
    if PYTHON_ALIAS not in data or _jobtype_base(data) != "python3":
        return data, "jobtype_extra", []
    rest = {key: value for key, value in data.items() if key != PYTHON_ALIAS}
    if "jobtype_extra" in data:
        error = (
            f"{PYTHON_ALIAS}: jobtype_extra is set too, and {PYTHON_ALIAS} is its older name;"
            " keep only jobtype_extra"
        )
        return rest, "jobtype_extra", [error]
    return {**rest, "jobtype_extra": data[PYTHON_ALIAS]}, PYTHON_ALIAS, []


def parse_manifest(data: Any, *, expected_name: str | None = None) -> Manifest:
    """Validate a decoded `job.yaml`, reporting every problem at once."""
    return parse_manifest_with_warnings(data, expected_name=expected_name)[0]


def parse_manifest_with_warnings(
    data: Any, *, expected_name: str | None = None
) -> tuple[Manifest, tuple[str, ...]]:
    """Validate a decoded `job.yaml`, reporting every problem at once; also return what the
    manifest should change although it is accepted (one line each)."""
    if not isinstance(data, dict):
        raise ManifestError([f"job.yaml must be a mapping of fields, not {type(data).__name__}"])
    data, extra_field, errors = _read_python_alias(data)
    warnings = (PYTHON_ALIAS_WARNING,) if extra_field == PYTHON_ALIAS else ()
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        errors.extend(_describe(error, extra_field=extra_field) for error in exc.errors())

    jobtype_base = _jobtype_base(data)
    extra_model = EXTRA_MODELS.get(jobtype_base) if jobtype_base else None
    extra = data.get("jobtype_extra", {})
    if extra_model is not None and isinstance(extra, dict):
        try:
            extra_model.model_validate(extra)
        except ValidationError as exc:
            errors.extend(_describe(error, (extra_field,)) for error in exc.errors())

    name = data.get("name")
    if expected_name is not None and isinstance(name, str) and name != expected_name:
        errors.append(
            f"name: {name!r} does not match the repository {expected_name!r}"
            f" (push to the repository named {name!r}, or set name: {expected_name})"
        )
    if errors:
        raise ManifestError(errors)
    assert manifest is not None
    return manifest, warnings


class _Refused(yaml.MarkedYAMLError):
    """YAML that is valid but more than a manifest may be."""


class _BoundedLoader(yaml.SafeLoader):
    """YAML as a manifest needs it, and no more: no anchors or aliases (a few hundred bytes of
    aliases expand into gigabytes: the "billion laughs"), at most MAX_YAML_DEPTH levels of
    nesting and MAX_YAML_NODES values. Checked while composing, before anything is built."""

    def __init__(self, stream: bytes | str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(problem=f"aliases (*{event.anchor}) are not allowed in a manifest",
                           problem_mark=event.start_mark)  # fmt: skip
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Refused(problem=f"anchors (&{anchor}) are not allowed in a manifest",
                           problem_mark=event.start_mark)  # fmt: skip
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _Refused(problem=f"more than {MAX_YAML_NODES} values",
                           problem_mark=event.start_mark)  # fmt: skip
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                               problem_mark=event.start_mark)  # fmt: skip
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def decode_manifest(text: bytes | str, *, source: str = "job.yaml") -> Any:
    """YAML text to Python data, with errors that say where the YAML broke; bounded in size,
    nesting and values, with no aliases (see `_BoundedLoader`)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            [f"{source}: {len(text)} bytes is larger than the limit of {MAX_MANIFEST_BYTES} bytes"]
        )
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # reading starts here: a bad encoding fails here
        return loader.get_single_data()
    except _Refused as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError([f"{source}{where}: {exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem).split())
        raise ManifestError([f"{source} is not valid YAML{where}: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([f"{source} is not valid YAML: {' '.join(str(exc).split())}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def merge_manifests(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`extends`: the job's own fields win; nested mappings are merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_manifests(merged[key], value)
        else:
            merged[key] = value
    return merged
