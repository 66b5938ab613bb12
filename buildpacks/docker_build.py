"""Building job images with the Docker SDK.

Every build gets a tag that is never reused, `racetrack-job/<name>:<version>-r<release>-<commit12>`,
and the labels `racetrack.job`, `racetrack.version`, `racetrack.release`, `racetrack.commit`.
Output streams line by line to the pusher and into the release's build log.

The SDK drives the engine's classic builder (it does not speak BuildKit's session protocol), so
build-time secrets cannot use `RUN --mount=type=secret`. Instead, for the length of one build,
a loopback-only HTTP endpoint hands the values, once, to the one step that needs them
(`with_build_secrets.py`), at a path only that build knows. They never enter a layer, the
image's config or its history, and any value that shows up in build output is masked before it
is shown or kept. The package index URL, which may carry credentials, travels the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import docker.errors

from buildpacks.build import BuildFailed, BuildRequest, ImageArtifact, Progress, SecretMask
from buildpacks.failures import Cause, plain, shorten
from buildpacks.names import safe_name

IMAGE_REPOSITORY = "racetrack-job"
BUILD_STAGE_LABEL = "racetrack.build-stage"
TAIL_LINES = 8
SECRETS_REQUEST_TIMEOUT = 5.0
_DOCKER_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# The classic builder's bookkeeping between steps says nothing a pusher needs.
_BUILDER_NOISE = re.compile(
    r"^(?: ---> [0-9a-f]{12}$| ---> Running in |Removing intermediate container )"
)
_LAYER_LINE = re.compile(r"^ ---> ([0-9a-f]{12})$")
_STEP_CONTAINER_LINE = re.compile(r"^ ---> Running in ([0-9a-f]{12})$")
_STEP_LINE = re.compile(r"^Step \d+/\d+ : ")


@dataclass(frozen=True)
class DockerBuildSettings:
    """Where images come from and how builds reach package indexes."""

    python_base_image: str | None = None  # default: python:<python_version or 3.11>-slim
    golang_base_image: str = "golang:1.22-bookworm"
    golang_runtime_image: str = "debian:bookworm-slim"
    ca_bundle: Path | None = None  # trusted by pip and apt inside builds
    pip_index_url: str | None = None  # may carry credentials: handled like a build secret
    # HOST[:PORT][/prefix]: every image built is pushed there, and runs from there
    registry: str | None = None


def docker_safe(text: str) -> str:
    """Characters Docker allows in tags and container names (`+build` metadata is not)."""
    return _DOCKER_UNSAFE.sub("_", text)


def image_tag(request: BuildRequest) -> str:
    """`racetrack-job/<job>:<version>-r<release>-<commit12>`; a job name with capitals, '_'
    or '.' (repositories are lowercase) through `safe_name`, the one mapping of names."""
    version = docker_safe(request.version)
    repository = f"{IMAGE_REPOSITORY}/{safe_name(request.job)}"
    return f"{repository}:{version}-r{request.release}-{request.commit[:12]}"


def image_labels(request: BuildRequest, platform_id: str) -> dict[str, str]:
    return {
        "racetrack.job": request.job,
        "racetrack.version": request.version,
        "racetrack.release": str(request.release),
        "racetrack.commit": request.commit,
        "racetrack.platform": platform_id,
    }


def label_instruction(labels: dict[str, str]) -> str:
    """One LABEL step for a generated Dockerfile (the SDK's `labels` adds one step per label)."""
    return "LABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in labels.items())


@contextlib.contextmanager
def _secret_endpoint(secrets: Mapping[str, str], path: str, port: int) -> Iterator[int]:
    """Serve `secrets` as JSON at `path` on 127.0.0.1, once, while the build runs; yield the port.

    The port (per platform) and the path (per job and secret values) stay the same from one
    build to the next, so the step that reads them keeps its layer cache; other builds cannot
    guess the path, and after one answer the endpoint answers nothing more.
    """
    body = json.dumps(dict(secrets)).encode()
    answered = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        timeout = SECRETS_REQUEST_TIMEOUT  # an idle client must not hold the build

        def do_GET(self) -> None:
            ok = self.path == path and not answered.is_set()
            if ok:
                answered.set()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SECRETS_REQUEST_TIMEOUT)


@dataclass
class _StepContainer:
    """The container running the current build step (what a cancel kills)."""

    container_id: str = ""


class ImageBuilder:
    """Builds images on one engine for one platform (the platform id labels what it owns)."""

    def __init__(
        self,
        client: docker.DockerClient,
        settings: DockerBuildSettings,
        platform_id: str,
        secret_key: bytes,
    ) -> None:
        self.client = client
        self.settings = settings
        self.platform_id = platform_id
        self._secret_key = secret_key
        digest = hashlib.sha256(platform_id.encode()).digest()
        self._secrets_port = 20000 + int.from_bytes(digest[:2], "big") % 20000
        self._network_mode = "host" if not client.networks.list(names=["bridge"]) else None

    def build_secrets(self, job_secrets: Mapping[str, str]) -> dict[str, str]:
        """The job's secret build environment plus the platform's (the package index URL)."""
        secrets = dict(job_secrets)
        if self.settings.pip_index_url:
            secrets["PIP_INDEX_URL"] = self.settings.pip_index_url
        return secrets

    def _secrets_path(self, job: str, secrets: Mapping[str, str]) -> str:
        material = json.dumps([job, sorted(secrets.items())]).encode()
        return "/build-env/" + hmac.new(self._secret_key, material, hashlib.sha256).hexdigest()

    def build(
        self,
        request: BuildRequest,
        context: Path,
        *,
        dockerfile: str = "Dockerfile",
        buildargs: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        labelled: bool = False,
    ) -> tuple[str, str]:
        """Build `context`; return (tag, image id). BuildFailed names the failing step.
        `labelled`: the (generated) Dockerfile already ends with `label_instruction`."""
        tag = image_tag(request)
        mask = SecretMask(secrets or {})
        args = dict(buildargs or {})
        started = datetime.now(UTC)
        with contextlib.ExitStack() as stack:
            network_mode = self._network_mode
            if secrets:
                path = self._secrets_path(request.job, secrets)
                port = stack.enter_context(_secret_endpoint(secrets, path, self._secrets_port))
                args["RACETRACK_SECRETS_URL"] = f"http://127.0.0.1:{port}{path}"
                network_mode = "host"  # the step reaches the endpoint on loopback
            request.progress(f"Building image {tag}")
            chunks = self.client.api.build(
                path=str(context),
                dockerfile=dockerfile,
                tag=tag,
                labels=None if labelled else image_labels(request, self.platform_id),
                buildargs=args,
                network_mode=network_mode,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            step = _StepContainer()
            stop_watching = threading.Event()
            watcher = threading.Thread(
                target=self._kill_steps_when_cancelled,
                args=(request.cancelled, stop_watching, step),
                daemon=True,
            )
            watcher.start()
            try:
                image_id = self._stream(chunks, request.progress, mask, step)
            except BuildFailed as failure:
                self._remove_failed_build(failure, started)
                if request.cancelled.is_set():
                    raise BuildFailed("the image build was cancelled") from None
                raise
            finally:
                stop_watching.set()  # the watcher ends within its poll interval; no join
            if request.cancelled.is_set():  # cancelled between steps: the build went on
                with contextlib.suppress(docker.errors.APIError):
                    self.client.images.remove(tag)
                raise BuildFailed("the image build was cancelled")
        return tag, image_id

    def push(self, artifact: ImageArtifact, progress: Progress) -> ImageArtifact:
        """Tag the image into the registry (`settings.registry`) and push it: the artifact
        then names the registry's copy, which is what a cluster's nodes pull."""
        registry = self.settings.registry
        assert registry is not None
        target = f"{registry.rstrip('/')}/{artifact.image}"
        repository, _, tag = target.rpartition(":")
        progress(f"Pushing {target}")
        try:
            self.client.api.tag(artifact.image_id, repository, tag)
            for chunk in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise BuildFailed(f"cannot push {target} to {registry}: {chunk['error']}")
        except docker.errors.APIError as exc:
            reason = exc.explanation or exc
            raise BuildFailed(f"cannot push {target} to {registry}: {reason}") from None
        return replace(artifact, image=target)

    def _kill_steps_when_cancelled(
        self, cancelled: threading.Event, done: threading.Event, step: _StepContainer
    ) -> None:
        """Once cancelled, kill each build step's container: the step fails, so does the build."""
        killed = ""
        while not done.is_set():
            if not cancelled.wait(0.2):
                continue
            current = step.container_id
            if current and current != killed:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.api.kill(current)
                killed = current
            done.wait(0.2)

    def remove_build_stages(self, tag: str) -> None:
        """Multi-stage builds leave each earlier stage as an untagged image (a compiler and its
        cache: hundreds of MB); remove those of the build of `tag`."""
        self.client.images.prune(filters={"dangling": True, "label": f"{BUILD_STAGE_LABEL}={tag}"})

    def _remove_failed_build(self, failure: BuildFailed, started: datetime) -> None:
        """A failed build leaves the last step it committed as an untagged image. Remove it
        (its untagged parents go with it unless another image builds on them) — but only an
        untagged image this very build created, never a base or cached image."""
        layer = getattr(failure, "last_layer", "")
        if not layer:
            return
        with contextlib.suppress(docker.errors.APIError):
            image = self.client.images.get(layer)
            # the engine's RFC 3339 time, to the second: 2026-11-24T21:21:05.412163768Z
            created = datetime.fromisoformat(image.attrs["Created"][:19]).replace(tzinfo=UTC)
            if not image.tags and created >= started.replace(microsecond=0):
                self.client.images.remove(image.id)

    def _stream(
        self,
        chunks: Iterator[dict[str, Any]],
        progress: Progress,
        mask: SecretMask,
        step: _StepContainer,
    ) -> str:
        tail: list[str] = []
        image_id = ""
        pending = ""
        last_layer = ""

        found = Cause()
        current_step = ""

        def emit(line: str) -> None:
            nonlocal last_layer, current_step
            line = mask(plain(line.rstrip()))
            if _STEP_LINE.match(line):
                current_step = line
            found.feed(line)
            layer = _LAYER_LINE.match(line)
            if layer:
                last_layer = layer.group(1)
            running = _STEP_CONTAINER_LINE.match(line)
            if running:
                step.container_id = running.group(1)
            if line.strip() and not _BUILDER_NOISE.match(line):
                progress(f"  {line}")
                tail.append(line)
                del tail[:-TAIL_LINES]

        def failed(message: str) -> BuildFailed:
            failure = BuildFailed(message)
            failure.last_layer = last_layer  # type: ignore[attr-defined]
            return failure

        try:
            for chunk in chunks:
                if "stream" in chunk:
                    pending += chunk["stream"]
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        emit(line)
                elif "error" in chunk:
                    emit(pending)
                    error = mask(" ".join(str(chunk["error"]).split()))
                    why = found.reason() or error
                    where = f" (at {current_step})" if current_step else ""
                    raise failed(shorten(f"docker build failed: {why}{where}"))
                elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except docker.errors.APIError as exc:
            raise BuildFailed(f"docker build failed: {mask(str(exc.explanation or exc))}") from None
        emit(pending)
        if not image_id:
            raise failed(f"docker build produced no image; last lines: {' | '.join(tail)}")
        return image_id
