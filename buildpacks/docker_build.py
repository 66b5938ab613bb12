"""Building job images with the Docker SDK.

Every build gets a tag that is never reused, `racetrack-job/<name>:<version>-r<release>-<commit12>`,
and the labels `racetrack.job`, `racetrack.version`, `racetrack.release`, `racetrack.commit`.
Output streams line by line to the pusher and into the release's build log.

The SDK drives the engine's classic builder (it does not speak BuildKit's session protocol), so
build-time secrets cannot use `RUN --mount=type=secret`. Instead, for the length of one build,
a loopback-only HTTP endpoint hands the values to the one step that needs them
(`with_build_secrets.py`); they never enter a layer, the image's config or its history, and any
value that shows up in build output is masked before it is shown or kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import docker
import docker.errors

from buildpacks.build import BuildFailed, BuildRequest, Progress

IMAGE_REPOSITORY = "racetrack-job"
BUILD_STAGE_LABEL = "racetrack.build-stage"
TAIL_LINES = 8
SECRET_MASK = "********"
BUILD_SECRETS_PATH = "/build-env"
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# The classic builder's bookkeeping between steps says nothing a pusher needs.
_LAYER_LINE = re.compile(r"^ ---> ([0-9a-f]{12})$")
_BUILDER_NOISE = re.compile(
    r"^(?: ---> [0-9a-f]{12}$| ---> Running in |Removing intermediate container )"
)


@dataclass(frozen=True)
class DockerBuildSettings:
    """Where images come from and how builds reach package indexes."""

    python_base_image: str | None = None  # default: python:<python_version or 3.11>-slim
    golang_base_image: str = "golang:1.22-bookworm"
    golang_runtime_image: str = "debian:bookworm-slim"
    ca_bundle: Path | None = None  # trusted by pip and apt inside builds
    pip_index_url: str | None = None


def image_tag(request: BuildRequest) -> str:
    version = _TAG_UNSAFE.sub("_", request.version)  # `+build` metadata is not allowed in tags
    return f"{IMAGE_REPOSITORY}/{request.job}:{version}-r{request.release}-{request.commit[:12]}"


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


class _SecretMask:
    """Replaces secret values in build output before anyone sees it."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        values = sorted({v for v in secrets.values() if len(v) >= 3}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, line: str) -> str:
        return self._pattern.sub(SECRET_MASK, line) if self._pattern else line


@contextlib.contextmanager
def _secret_endpoint(secrets: Mapping[str, str], preferred_port: int) -> Iterator[int]:
    """Serve `secrets` as JSON on 127.0.0.1 while the build runs; yields the port.

    The port is stable per platform when free, so that the build step that reads it (whose
    command line includes the port) keeps its layer cache from one build to the next.
    """
    body = json.dumps(dict(secrets)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == BUILD_SECRETS_PATH
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = HTTPServer(("127.0.0.1", preferred_port), Handler)
    except OSError:
        server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class ImageBuilder:
    """Builds images on one engine for one platform (the platform id labels what it owns)."""

    def __init__(
        self, client: docker.DockerClient, settings: DockerBuildSettings, platform_id: str
    ) -> None:
        self.client = client
        self.settings = settings
        self.platform_id = platform_id
        digest = hashlib.sha256(platform_id.encode()).digest()
        self._secrets_port = 20000 + int.from_bytes(digest[:2], "big") % 20000
        self._network_mode = "host" if not client.networks.list(names=["bridge"]) else None

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
        mask = _SecretMask(secrets or {})
        args = dict(buildargs or {})
        with contextlib.ExitStack() as stack:
            network_mode = self._network_mode
            if secrets:
                port = stack.enter_context(_secret_endpoint(secrets, self._secrets_port))
                args["RACETRACK_SECRETS_PORT"] = str(port)
                network_mode = "host"  # the step reaches the endpoint on loopback
            request.progress(f"Building image {tag}")
            image_id = self._stream(
                self.client.api.build(
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
                ),
                request.progress,
                mask,
            )
        return tag, image_id

    def remove_build_stages(self) -> None:
        """Multi-stage builds leave each earlier stage as an untagged image (the compiler and
        its cache: hundreds of MB a build); remove this platform's."""
        self.client.images.prune(
            filters={
                "dangling": True,
                "label": [f"{BUILD_STAGE_LABEL}=true", f"racetrack.platform={self.platform_id}"],
            }
        )

    def _remove_failed_build(self, last_layer: str) -> None:
        """A failed build leaves its last committed step as an untagged image; remove it (its
        untagged parents go with it unless another image still builds on them)."""
        with contextlib.suppress(docker.errors.APIError):
            self.client.images.remove(last_layer)

    def _stream(
        self, chunks: Iterator[dict[str, Any]], progress: Progress, mask: _SecretMask
    ) -> str:
        tail: list[str] = []
        image_id = ""
        pending = ""
        last_layer = ""

        def emit(line: str) -> None:
            nonlocal last_layer
            line = mask(line.rstrip())
            layer = _LAYER_LINE.match(line)
            if layer:
                last_layer = layer.group(1)
            if line.strip() and not _BUILDER_NOISE.match(line):
                progress(f"  {line}")
                tail.append(line)
                del tail[:-TAIL_LINES]

        try:
            for chunk in chunks:
                if "stream" in chunk:
                    pending += chunk["stream"]
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        emit(line)
                elif "error" in chunk:
                    emit(pending)
                    if last_layer:
                        self._remove_failed_build(last_layer)
                    error = mask(" ".join(str(chunk["error"]).split()))
                    raise BuildFailed(
                        f"docker build failed: {error}; last lines: {' | '.join(tail)}"
                    )
                elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        except docker.errors.APIError as exc:
            raise BuildFailed(f"docker build failed: {mask(str(exc.explanation or exc))}") from None
        emit(pending)
        if not image_id:
            raise BuildFailed(f"docker build produced no image; last lines: {' | '.join(tail)}")
        return image_id
