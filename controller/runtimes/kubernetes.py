"""The kubernetes runtime: each release is a Deployment, a Service and a Secret.

Kubernetes owns the replicas: it restarts crashed containers, replaces deleted pods and probes
readiness (startup and liveness on `/live`, readiness on `/ready`). This runtime creates the
release's objects (see `kubernetes_objects.py`), follows the platform's pods with one watch, and
answers from what the watch saw:
- `wait_ready`: every replica ready, or the first reason it will not be, read from pod status
  (Unschedulable, ErrImagePull, CrashLoopBackOff, OOMKilled) or from the job's own `/live`
  (an init error);
- `upstreams`: outside the cluster (development), the ready pods' addresses, so that only ready
  pods get calls; inside it, the release's Service;
- `events`: a ready pod that stops being ready, or goes away, and one that becomes ready.

The client is `kubernetes_asyncio`: the platform is one event loop, and the API's watches and
log streams are long-lived requests, which an aiohttp-based client keeps without a thread each.
Objects are sent and read as plain JSON dicts, as the API documents them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from buildpacks.build import Artifact, ImageArtifact
from controller.runtimes import kubernetes_objects as objects
from controller.runtimes.base import (
    EventKind,
    EventQueue,
    FailureReason,
    OwnedRelease,
    ReleaseFailed,
    ReleaseSpec,
    Replica,
    RunningRelease,
    RuntimeEvent,
    merged_lines,
)
from controller.runtimes.kubernetes_objects import ResourcePolicy
from controller.runtimes.probes import PROBE_TIMEOUT, probe_once

log = logging.getLogger("racetrack.runtime.kubernetes")

IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
CONFIG_ERROR_GRACE = 15.0  # seconds such a reason may last before it fails the release
WATCH_SECONDS = 60  # a watch is renewed this often (the API ends it anyway)
API_CONNECT_TIMEOUT = 5.0
API_READ_TIMEOUT = 30.0
API_TIMEOUT = (API_CONNECT_TIMEOUT, API_READ_TIMEOUT)  # every call, unless it says otherwise
WATCH_RETRY = 1.0
WATCH_RETRY_MAX = 30.0
STOP_EXTRA = 30.0  # beyond the grace, how long stopping waits for pods to go
FAILURE_TAIL_LINES = 5
KINDS = ("deployments", "services", "secrets")


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str = "racetrack"
    pull_policy: str = "IfNotPresent"
    policy: ResourcePolicy = field(default_factory=ResourcePolicy)
    # route through each release's Service (the platform runs in the cluster) rather than to
    # the ready pods' addresses (it runs outside, where Service addresses do not route)
    via_service: bool = False
    stop_grace: float = 10.0
    ready_timeout: float = 180.0


@dataclass(eq=False)
class KubernetesRelease:
    spec: ReleaseSpec
    image: str
    runtime: KubernetesRuntime
    stopped: bool = False
    # pod → when it was first seen with a container config error (see _container_failure)
    config_errors: dict[str, float] = field(default_factory=dict)
    applied: bool = False  # its objects were all created (reconcile may bring back only then)
    # the kinds of object this platform created (or adopted) for it: all that stop() deletes
    owned: set[str] = field(default_factory=set)

    def replicas(self) -> list[Replica]:
        pods = self.runtime.pods_of(self.spec.name)
        found = [Replica(name, self.runtime.pod_url(self, pod), _ready(pod)) for name, pod in pods]
        missing = [
            Replica(f"{self.spec.name}-pending-{i}", "", False)
            for i in range(self.spec.replicas - len(found))
        ]
        return found + missing


class KubernetesRuntime:
    name = "kubernetes"
    artifact_kind = ImageArtifact.kind
    exclusive_ports = False  # every pod has its own address

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        platform_id: str,
        settings: KubernetesSettings,
        prune_images: Callable[[str, int, set[str]], Awaitable[list[str]]] | None = None,
    ) -> None:
        self._prune_images = prune_images  # the build engine's copies of old images
        self._api = api
        self._core = k8s.CoreV1Api(api)
        self._apps = k8s.AppsV1Api(api)
        self._platform_id = platform_id
        self._settings = settings
        self._namespace = settings.namespace
        self._releases: dict[str, KubernetesRelease] = {}
        # the platform's pods as the watch last saw them: release name → pod name → pod
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._events = EventQueue()
        self._session: aiohttp.ClientSession | None = None

    @property
    def server(self) -> str:
        return str(self._api.configuration.host)

    # what the watch saw

    def pods_of(self, release: str) -> list[tuple[str, dict[str, Any]]]:
        pods = self._pods.get(release, {})
        return sorted((n, p) for n, p in pods.items() if not p["metadata"].get("deletionTimestamp"))

    def pod_url(self, release: KubernetesRelease, pod: dict[str, Any]) -> str:
        ip = pod.get("status", {}).get("podIP")
        if not ip:
            return ""
        assert isinstance(release.spec.artifact, ImageArtifact)
        return f"http://{ip}:{objects.port_of(release.spec.artifact)}"

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.ensure_future(self._follow_pods())

    async def _follow_pods(self) -> None:
        """List the platform's pods, then watch them from that list's version; again when a
        watch ends or fails."""
        selector = f"racetrack.platform={self._platform_id}"
        retry = WATCH_RETRY
        while True:
            try:
                listing = await self._call(
                    self._core.list_namespaced_pod, self._namespace, label_selector=selector
                )
                retry = WATCH_RETRY
                fresh: dict[str, dict[str, dict[str, Any]]] = {}
                for pod in listing.get("items", []):
                    release = pod["metadata"].get("labels", {}).get("racetrack.release-name", "")
                    fresh.setdefault(release, {})[pod["metadata"]["name"]] = pod
                self._replace_pods(fresh)
                self._synced.set()
                version = listing["metadata"].get("resourceVersion")
                response = await self._raw(
                    self._core.list_namespaced_pod,
                    self._namespace,
                    label_selector=selector,
                    watch=True,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    # a cluster gone silent ends the watch too: relist, or keep what was seen
                    _request_timeout=(API_CONNECT_TIMEOUT, WATCH_SECONDS + 15),
                )
                async with response:
                    async for line in response.content:
                        self._on_pod_event(json.loads(line))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API went away, or the watch expired: list again
                # (what the watch saw last stays: the routes do not change while it is away)
                log.info("pod watch ended (%s); listing again in %.0fs", exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, WATCH_RETRY_MAX)

    def _on_pod_event(self, event: dict[str, Any]) -> None:
        kind, pod = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise RuntimeError(pod.get("message", "watch error"))
        metadata = pod.get("metadata", {})
        release = metadata.get("labels", {}).get("racetrack.release-name", "")
        name = metadata.get("name", "")
        before = self._pods.get(release, {}).get(name)
        if kind == "DELETED":
            self._pods.get(release, {}).pop(name, None)
            pod = {}
        else:
            self._pods.setdefault(release, {})[name] = pod
        self._report(release, name, before, pod or None)
        self._changed.set()

    def _replace_pods(self, fresh: dict[str, dict[str, dict[str, Any]]]) -> None:
        old = self._pods
        self._pods = fresh
        for release in set(old) | set(fresh):
            for name in set(old.get(release, {})) | set(fresh.get(release, {})):
                self._report(
                    release, name, old.get(release, {}).get(name), fresh.get(release, {}).get(name)
                )
        self._changed.set()

    def _report(
        self, release: str, pod: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        """A held release's pod that changed readiness is an event: the routes follow it."""
        held = self._releases.get(release)
        if held is None or held.stopped:
            return
        was, now = before is not None and _ready(before), after is not None and _ready(after)
        if was and not now:
            kind = (
                EventKind.DIED
                if after is None or _restarts(after) > _restarts(before or {})
                else EventKind.UNREADY
            )
            self._events.put(RuntimeEvent(kind, release, pod, _pod_problem(after) or ""))
        elif now and not was:
            kind = (
                EventKind.RESTARTED if before is None or _restarts(after or {}) else EventKind.READY
            )
            self._events.put(RuntimeEvent(kind, release, pod))

    async def _wait_change(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # the API

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call, answered as the JSON the API sent."""
        response = await self._raw(method, *args, **kwargs)
        async with response:
            return dict(json.loads(await response.read()))

    async def _raw(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """The API's response as it streams (the caller reads and closes it); ApiException
        with the API's message for an error status, ReleaseFailed(UNREACHABLE) when the cluster
        does not answer."""
        kwargs.setdefault("_request_timeout", API_TIMEOUT)
        try:
            response = await method(*args, _preload_content=False, **kwargs)
            if not 200 <= response.status <= 299:
                async with response:
                    body = (await response.read()).decode("utf-8", "replace")
                failure = ApiException(status=response.status, reason=response.reason)
                failure.body = body
                raise failure
            return response
        except ApiException:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            raise ReleaseFailed(
                FailureReason.UNREACHABLE, f"the cluster at {self.server} does not answer: {why}"
            ) from None

    async def check_reachable(self) -> None:
        """At start-up: the API answers, the namespace exists (when this identity may read
        namespaces) and this identity may manage Deployments there; ReleaseFailed otherwise."""
        try:
            await self._call(self._core.read_namespace, self._namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise ReleaseFailed(
                    FailureReason.START_FAILED,
                    f"namespace {self._namespace!r} does not exist in the cluster at"
                    f" {self.server} (create it, or see deploy/kubernetes/namespace.yaml)",
                ) from None
            if exc.status != 403:  # a namespaced service account may not read namespaces
                raise ReleaseFailed(FailureReason.START_FAILED, _api_reason(exc)) from None
        try:
            await self._call(self._apps.list_namespaced_deployment, self._namespace, limit=1)
        except ApiException as exc:
            raise ReleaseFailed(
                FailureReason.START_FAILED,
                f"cannot list Deployments in namespace {self._namespace!r}: {_api_reason(exc)}"
                " (see deploy/kubernetes/rbac.yaml)",
            ) from None

    def _objects(self, spec: ReleaseSpec, image: str) -> list[tuple[str, dict[str, Any]]]:
        settings = self._settings
        return [
            ("secrets", objects.secret(spec, self._platform_id)),
            (
                "deployments",
                objects.deployment(
                    spec,
                    self._platform_id,
                    image=image,
                    pull_policy=settings.pull_policy,
                    policy=settings.policy,
                    stop_grace=settings.stop_grace,
                    ready_timeout=settings.ready_timeout,
                ),
            ),
            ("services", objects.service(spec, self._platform_id)),
        ]

    def _method(self, verb: str, kind: str) -> Any:
        """The client's `<verb>_namespaced_<kind>` (`read`, `create`, `delete`, `list`) for one
        of KINDS: Deployments are in the apps API, Services and Secrets in the core one."""
        api = self._apps if kind == "deployments" else self._core
        return getattr(api, f"{verb}_namespaced_{kind[:-1]}")

    async def _create(self, kind: str, body: dict[str, Any], *, dry_run: bool = False) -> None:
        create = self._method("create", kind)
        extra = {"dry_run": "All"} if dry_run else {}
        await self._call(create, self._namespace, body, **extra)

    async def _delete(self, kind: str, name: str) -> bool:
        delete = self._method("delete", kind)
        try:
            await self._call(delete, name, self._namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def dry_run(self, spec: ReleaseSpec) -> None:
        """Have the API server validate (and admit) the release's objects without keeping
        them; ApiException says what it refused."""
        for kind, body in self._objects(spec, self._image(spec)):
            await self._create(kind, body, dry_run=True)

    def _image(self, spec: ReleaseSpec) -> str:
        assert isinstance(spec.artifact, ImageArtifact)
        return spec.artifact.image

    # a release

    def isolation(self, spec: ReleaseSpec) -> str:
        requirements = self._settings.policy.requirements(spec)
        requests, limits = requirements["requests"], requirements["limits"]
        return (
            f"a pod in namespace {self._namespace} (uid {objects.JOB_UID}, not root, all"
            " capabilities dropped, no service account token); requests"
            f" {requests['memory']} and {requests['cpu']} CPU, limits {limits['memory']} and"
            f" {limits['cpu']} CPU"
        )

    async def start(self, spec: ReleaseSpec) -> KubernetesRelease:
        problem = self._settings.policy.check(spec)
        if problem is not None:
            raise ReleaseFailed(FailureReason.START_FAILED, problem)
        self._ensure_watch()
        release = KubernetesRelease(spec, self._image(spec), self)
        self._releases[spec.name] = release
        try:
            await self._apply(release)
        except ApiException as exc:
            await asyncio.shield(self.stop(release))
            raise ReleaseFailed(FailureReason.START_FAILED, _api_reason(exc)) from None
        except BaseException:
            await asyncio.shield(self.stop(release))
            raise
        log.info("created %s in %s (%d replicas)", spec.name, self._namespace, spec.replicas)
        return release

    async def _apply(self, release: KubernetesRelease) -> None:
        """Create the release's objects; one left by an earlier platform under the same name
        (this platform's, by its labels) is replaced."""
        for kind, body in self._objects(release.spec, release.image):
            try:
                await self._create(kind, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                name = body["metadata"]["name"]
                await self._check_ours(kind, name)
                await self._delete(kind, name)
                await self._wait_gone(kind, name)
                await self._create(kind, body)
            release.owned.add(kind)
        release.applied = True

    async def _check_ours(self, kind: str, name: str) -> None:
        """An object in the way must be this platform's leftover of the same release: anything
        else (another platform's in a shared namespace, an unrelated object) is left alone."""
        read = self._method("read", kind)
        found = await self._call(read, name, self._namespace)
        labels = found.get("metadata", {}).get("labels") or {}
        if labels.get("racetrack.platform") != self._platform_id or (
            labels.get("racetrack.release-name") != name
        ):
            owner = labels.get("racetrack.platform")
            raise ReleaseFailed(
                FailureReason.START_FAILED,
                f"{kind[:-1]} {name} already exists in namespace {self._namespace} and is not"
                f" this platform's (racetrack.platform={owner!r}); remove it, or give each"
                " platform a namespace of its own",
            )

    async def _wait_gone(self, kind: str, name: str) -> None:
        read = self._method("read", kind)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_EXTRA
        while loop.time() < deadline:
            try:
                await self._call(read, name, self._namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            await asyncio.sleep(0.2)

    async def adopt(self, spec: ReleaseSpec) -> KubernetesRelease | None:
        try:
            found = await self._call(
                self._apps.read_namespaced_deployment, spec.name, self._namespace
            )
            await self._call(self._core.read_namespaced_secret, spec.name, self._namespace)
        except ApiException:
            return None
        labels = found["metadata"].get("labels", {})
        containers = found["spec"]["template"]["spec"]["containers"]
        if (
            labels.get("racetrack.platform") != self._platform_id
            or containers[0].get("image") != self._image(spec)
            or found["spec"].get("replicas") != spec.replicas
        ):
            return None
        self._ensure_watch()
        release = KubernetesRelease(spec, self._image(spec), self, applied=True, owned=set(KINDS))
        self._releases[spec.name] = release
        log.info("adopted %s", spec.name)
        return release

    async def wait_ready(self, release: RunningRelease, timeout: float) -> None:
        assert isinstance(release, KubernetesRelease)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout)
        while True:
            pods = self.pods_of(release.spec.name)
            if len(pods) == release.spec.replicas and all(_ready(p) for _, p in pods):
                return  # first: an adopted pod that crashed once, long ago, is ready now
            failure = await self._failure(release, pods)
            if failure is not None:
                raise failure
            remaining = deadline - loop.time()
            if remaining <= 0:
                states = "; ".join(f"{n}: {_pod_problem(p) or _phase(p)}" for n, p in pods)
                raise ReleaseFailed(
                    FailureReason.TIMEOUT,
                    f"{release.spec.name} was not ready within {timeout:.0f}s"
                    f" ({states or 'no pod was created'})",
                )
            await self._wait_change(min(remaining, 1.0))

    async def _failure(
        self, release: KubernetesRelease, pods: list[tuple[str, dict[str, Any]]]
    ) -> ReleaseFailed | None:
        for name, pod in pods:
            status = pod.get("status", {})
            for condition in status.get("conditions", []):
                if (
                    condition.get("type") == "PodScheduled"
                    and condition.get("status") == "False"
                    and condition.get("reason") == "Unschedulable"
                ):
                    return ReleaseFailed(
                        FailureReason.UNSCHEDULABLE,
                        f"{name} cannot be scheduled: {condition.get('message', '')}",
                    )
            for container in status.get("containerStatuses", []):
                failure = await self._container_failure(release, name, container)
                if failure is not None:
                    return failure
            if (
                status.get("podIP")
                and not _ready(pod)
                and release.spec.artifact.probe.kind == "wrapper"
            ):
                url = self.pod_url(release, pod)
                try:
                    await probe_once(self._probe_session(), name, url, release.spec.artifact.probe)
                except ReleaseFailed as exc:
                    return exc  # the job's code failed to load: /live says why
        return None

    async def _container_failure(
        self, release: KubernetesRelease, pod: str, container: dict[str, Any]
    ) -> ReleaseFailed | None:
        state, last = container.get("state", {}), container.get("lastState", {})
        waiting = state.get("waiting") or {}
        reason, message = waiting.get("reason", ""), waiting.get("message", "")
        if reason in IMAGE_PULL_REASONS:
            return ReleaseFailed(
                FailureReason.IMAGE_PULL,
                f"{pod} cannot pull its image {container.get('image')}: {reason} {message}".strip(),
            )
        if reason in CONFIG_REASONS:
            # the kubelet reports these while its caches catch up with a new Secret ("failed to
            # sync secret cache"): a failure only when it lasts
            now = asyncio.get_running_loop().time()
            since = release.config_errors.setdefault(pod, now)
            if now - since >= CONFIG_ERROR_GRACE:
                return ReleaseFailed(
                    FailureReason.START_FAILED, f"{pod}: {reason} {message}".strip()
                )
            return None
        release.config_errors.pop(pod, None)
        if state.get("running") is not None and container.get("ready"):
            return None  # whatever it went through before, it runs and is ready now
        terminated = state.get("terminated") or last.get("terminated")
        if terminated is None and container.get("restartCount", 0) == 0:
            return None
        terminated = terminated or {}
        if terminated.get("reason") == "OOMKilled":
            memory = self._settings.policy.requirements(release.spec)["limits"]["memory"]
            return ReleaseFailed(
                FailureReason.OUT_OF_MEMORY,
                f"{pod} was killed: out of memory (memory limit {memory})",
            )
        if terminated or reason == "CrashLoopBackOff":
            tail = await self._tail(pod, previous=state.get("terminated") is None)
            return ReleaseFailed(
                FailureReason.CRASHED,
                f"{pod} exited with status {terminated.get('exitCode')} before it was ready:"
                f" {tail}",
            )
        return None

    async def _log_of(self, pod: str, **options: Any) -> Any:
        """The job container's log, as it streams (see `_raw`)."""
        return await self._raw(
            self._core.read_namespaced_pod_log,
            pod,
            self._namespace,
            container=objects.CONTAINER,
            **options,
        )

    async def _tail(self, pod: str, *, previous: bool) -> str:
        try:
            response = await self._log_of(pod, tail_lines=FAILURE_TAIL_LINES, previous=previous)
            async with response:
                text = (await response.read()).decode("utf-8", "replace")
        except (ApiException, ReleaseFailed, aiohttp.ClientError, OSError):
            return ""
        return " | ".join(line.rstrip() for line in text.splitlines() if line.strip())

    def _probe_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=PROBE_TIMEOUT)
        return self._session

    def upstreams(self, release: RunningRelease) -> list[str]:
        assert isinstance(release, KubernetesRelease)
        if release.stopped:
            return []
        ready = [(n, p) for n, p in self.pods_of(release.spec.name) if _ready(p)]
        if self._settings.via_service:
            name = release.spec.name
            service = f"http://{name}.{self._namespace}.svc:{objects.SERVICE_PORT}"
            return [service] if ready else []
        return [self.pod_url(release, p) for _, p in ready]

    async def stop(self, release: RunningRelease) -> None:
        """Delete the release's objects and wait (with a deadline) until its pods are gone:
        Kubernetes sends SIGTERM, and SIGKILL after the grace."""
        assert isinstance(release, KubernetesRelease)
        release.stopped = True
        name = release.spec.name
        try:
            for kind in KINDS:
                if kind in release.owned:  # never what another owner holds under the name
                    await self._delete(kind, name)
        except (ApiException, ReleaseFailed) as exc:
            log.error("could not delete %s (reconcile tries again): %s", name, exc)
        if self._releases.get(name) is release:
            del self._releases[name]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.stop_grace + STOP_EXTRA
        while self._pods.get(name) and loop.time() < deadline:
            await self._wait_change(1.0)
        log.info("deleted %s", name)

    async def list_owned(self) -> list[OwnedRelease]:
        owned: dict[str, OwnedRelease] = {}
        for _kind, item in await self._owned_objects():
            labels = item["metadata"].get("labels", {})
            with contextlib.suppress(KeyError, ValueError):
                name = labels["racetrack.release-name"]
                owned[name] = OwnedRelease(
                    name,
                    labels["racetrack.job"],
                    labels["racetrack.version"],
                    int(labels["racetrack.release"]),
                )
        return list(owned.values())

    async def _owned_objects(self) -> list[tuple[str, dict[str, Any]]]:
        selector = f"racetrack.platform={self._platform_id}"
        found: list[tuple[str, dict[str, Any]]] = []
        for kind in KINDS:
            listing = self._method("list", kind)
            answer = await self._call(listing, self._namespace, label_selector=selector)
            found += [(kind, item) for item in answer.get("items", [])]
        return found

    def events(self) -> AsyncIterator[RuntimeEvent]:
        return self._events.stream()

    async def reconcile(self, desired: Collection[str]) -> list[str]:
        """Objects of this platform whose release is neither desired nor held are deleted (an
        orphan of a deploy that a restart interrupted); a held release whose Deployment is gone
        gets its objects again. Pods deleted by hand are Kubernetes' to replace."""
        self._ensure_watch()
        wanted = set(desired)
        changes: list[str] = []
        present: set[tuple[str, str]] = set()
        for kind, item in await self._owned_objects():
            name = item["metadata"]["name"]
            release = item["metadata"].get("labels", {}).get("racetrack.release-name", name)
            # decided now, after the listing: a release started meanwhile is held by now
            if release in wanted or release in self._releases:
                present.add((kind, name))
            elif await self._delete(kind, name):
                changes.append(f"deleted {kind[:-1]} {name}: it served no release")
        for release in list(self._releases.values()):
            missing = [k for k in KINDS if (k, release.spec.name) not in present]
            if release.stopped or not release.applied or not missing:
                continue
            for kind, body in self._objects(release.spec, release.image):
                if kind in missing:
                    with contextlib.suppress(ApiException):
                        await self._create(kind, body)
                        release.owned.add(kind)
            changes.append(f"created {', '.join(missing)} of {release.spec.name} again")
        return changes

    async def restarts(self, release: RunningRelease) -> int:
        assert isinstance(release, KubernetesRelease)
        return sum(_restarts(p) for _, p in self.pods_of(release.spec.name))

    def logs(self, release: RunningRelease, tail: int, follow: bool) -> AsyncIterator[str]:
        assert isinstance(release, KubernetesRelease)
        pods = [name for name, _ in self.pods_of(release.spec.name)]
        return merged_lines({pod: self._pod_logs(pod, tail, follow) for pod in pods})

    async def _pod_logs(self, pod: str, tail: int, follow: bool) -> AsyncIterator[str]:
        try:
            response = await self._log_of(
                pod,
                tail_lines=tail,
                follow=follow,
                # a followed log may be quiet for ever; one that is not followed may not
                _request_timeout=(API_CONNECT_TIMEOUT, None if follow else API_READ_TIMEOUT),
            )
        except (ApiException, ReleaseFailed) as exc:
            yield f"(no logs: {exc})"
            return
        async with response:
            async for line in response.content:
                yield line.decode("utf-8", "replace").rstrip("\n")

    async def artifact_available(self, artifact: Artifact) -> bool:
        """Whether the registry still has the image (its tag)."""
        if not isinstance(artifact, ImageArtifact):
            return False
        reference = _registry_reference(artifact.image)
        if reference is None:
            return False
        url, accept = reference
        try:
            async with self._probe_session().head(url, headers={"Accept": accept}) as answer:
                return answer.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        """The build engine's copies of old images; the registry keeps every tag (rollbacks
        to any release whose image it still holds work)."""
        if self._prune_images is None:
            return []
        return await self._prune_images(job, keep, in_use)

    async def close(self) -> None:
        """Releases keep running (the cluster owns them); a restarted platform adopts them."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        self._events.close()
        if self._session is not None:
            await self._session.close()
        await self._api.close()


def _ready(pod: dict[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _restarts(pod: dict[str, Any]) -> int:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def _phase(pod: dict[str, Any]) -> str:
    return str(pod.get("status", {}).get("phase", "Pending")).lower()


def _pod_problem(pod: dict[str, Any] | None) -> str | None:
    """The waiting or terminated reason of a pod's container, if it has one."""
    if not pod:
        return None
    for container in pod.get("status", {}).get("containerStatuses", []):
        state = container.get("state", {})
        for key in ("waiting", "terminated"):
            if state.get(key, {}).get("reason"):
                return str(state[key]["reason"])
    return None


def _api_reason(exc: ApiException) -> str:
    """The API server's own message (e.g. what admission refused), not the HTTP dump."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def _registry_reference(image: str) -> tuple[str, str] | None:
    """The registry URL of an image's manifest (`HOST[:PORT]/repo:tag`), and what to accept."""
    host, _, rest = image.partition("/")
    if "." not in host and ":" not in host and host != "localhost":
        return None  # not a registry reference
    repository, _, tag = rest.rpartition(":")
    if not repository or "/" in tag:
        return None
    scheme = "http" if host.split(":")[0] in ("127.0.0.1", "localhost") else "https"
    accept = (
        "application/vnd.docker.distribution.manifest.v2+json,"
        "application/vnd.oci.image.manifest.v1+json"
    )
    return f"{scheme}://{host}/v2/{repository}/manifests/{tag}", accept
