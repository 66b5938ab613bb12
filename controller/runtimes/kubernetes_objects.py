"""The Kubernetes objects of one release, as plain dicts the API takes (kept pure, so that they
can be checked alone and, in the live suite, by the API server's dry run).

Per release: a Secret with the job's environment (manifest values, secrets, config and the
platform's variables: never in plain env of the Deployment), a Deployment with the release's
replicas, requests and limits, probes and a non-root security context, and a Service in front
of its pods. Everything carries the labels `racetrack.platform`, `racetrack.job`,
`racetrack.version`, `racetrack.release` and `racetrack.release-name`, and every name comes
from `names.release_name`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from buildpacks.build import ImageArtifact, Probe
from controller.runtimes.base import ReleaseSpec
from controller.runtimes.resources import cpu_cores, memory_bytes

CONTAINER = "job"
CONTAINER_PORT = 7000  # where a job listens in its pod, unless its image fixes a port
SERVICE_PORT = 80
JOB_UID = 65532  # any uid but root: images are world-readable, and the job owns nothing else
STARTUP_PERIOD = (
    1  # seconds between startup probes (a pod is ready at best one period after it starts)
)
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class ResourcePolicy:
    """Racetrack's defaults for what a manifest leaves out, and the cap nothing may exceed."""

    memory_min: str = "256Mi"
    memory_max: str = "1Gi"
    cpu_min: str = "10m"
    cpu_max: str = "1000m"
    max_memory: str = "8Gi"  # `--k8s-max-memory`
    max_cpu: str = "8"  # `--k8s-max-cpu`

    def check(self, spec: ReleaseSpec) -> str | None:
        """Why the release asks for more than the cap, if it does."""
        resources = spec.resources
        if resources is None:
            return None
        for field, value in (
            ("memory_min", resources.memory_min),
            ("memory_max", resources.memory_max),
        ):
            if value and memory_bytes(value) > memory_bytes(self.max_memory):
                return (
                    f"resources.{field} {value} is over this cluster's cap of"
                    f" {self.max_memory} (--k8s-max-memory)"
                )
        for field, value in (("cpu_min", resources.cpu_min), ("cpu_max", resources.cpu_max)):
            if value and cpu_cores(value) > cpu_cores(self.max_cpu):
                return (
                    f"resources.{field} {value} is over this cluster's cap of"
                    f" {self.max_cpu} (--k8s-max-cpu)"
                )
        return None

    def requirements(self, spec: ReleaseSpec) -> dict[str, dict[str, str]]:
        """Requests and limits: the manifest's, else Racetrack's defaults, never a request
        over its limit (the API refuses that): a default limit under the manifest's minimum
        rises to it, a default request over the manifest's maximum falls to it."""
        resources = spec.resources
        memory_min = resources.memory_min if resources else None
        memory_max = resources.memory_max if resources else None
        cpu_min = resources.cpu_min if resources else None
        cpu_max = resources.cpu_max if resources else None
        memory_limit = memory_max or max(self.memory_max, memory_min or "0", key=memory_bytes)
        cpu_limit = cpu_max or max(self.cpu_max, cpu_min or "0", key=cpu_cores)
        memory_request = memory_min or min(self.memory_min, memory_limit, key=memory_bytes)
        cpu_request = cpu_min or min(self.cpu_min, cpu_limit, key=cpu_cores)
        return {
            "requests": {"memory": memory_request, "cpu": cpu_request},
            "limits": {"memory": memory_limit, "cpu": cpu_limit},
        }


def label_value(text: str) -> str:
    """A label value (at most 63 letters, digits, '-', '_', '.'): `1.0+b` → `1.0_b`."""
    return _LABEL_UNSAFE.sub("_", text)[:63].strip("-_.") or "x"


def labels(spec: ReleaseSpec, platform_id: str) -> dict[str, str]:
    return {
        "racetrack.platform": platform_id,
        "racetrack.job": label_value(spec.job),  # the release-name label is the exact one
        "racetrack.version": label_value(spec.version),
        "racetrack.release": str(spec.release),
        "racetrack.release-name": spec.name,
    }


def selector(spec: ReleaseSpec, platform_id: str) -> dict[str, str]:
    return {"racetrack.platform": platform_id, "racetrack.release-name": spec.name}


def port_of(artifact: ImageArtifact) -> int:
    return artifact.port if artifact.port is not None else CONTAINER_PORT


def secret(spec: ReleaseSpec, platform_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": spec.name, "labels": labels(spec, platform_id)},
        "type": "Opaque",
        "stringData": dict(spec.env),
    }


def _probe(probe: Probe, port: int, path: str, **timing: int) -> dict[str, Any]:
    if probe.kind == "tcp":
        action: dict[str, Any] = {"tcpSocket": {"port": port}}
    else:
        target = path if probe.kind == "wrapper" else (probe.path or "/")
        action = {"httpGet": {"path": target, "port": port}}
    return {**action, "timeoutSeconds": 2, **timing}


def deployment(
    spec: ReleaseSpec,
    platform_id: str,
    *,
    image: str,
    pull_policy: str,
    policy: ResourcePolicy,
    stop_grace: float,
    ready_timeout: float,
) -> dict[str, Any]:
    artifact = spec.artifact
    assert isinstance(artifact, ImageArtifact)
    port = port_of(artifact)
    env = {
        **artifact.env,  # how the image runs
        "PORT": str(port),
        "LISTEN_HOST": "0.0.0.0",
        "RACETRACK_SHUTDOWN_GRACE": str(stop_grace * 0.8),
    }
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "ports": [{"name": "http", "containerPort": port}],
        # the job's environment from its Secret; how the image runs wins over it
        "envFrom": [{"secretRef": {"name": spec.name}}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": policy.requirements(spec),
        # until /live answers, the job is starting; liveness and readiness begin after that
        "startupProbe": _probe(
            artifact.probe,
            port,
            "/live",
            periodSeconds=STARTUP_PERIOD,
            failureThreshold=max(1, int(ready_timeout / STARTUP_PERIOD)),
        ),
        "livenessProbe": _probe(
            artifact.probe, port, "/live", periodSeconds=10, failureThreshold=3
        ),
        "readinessProbe": _probe(
            artifact.probe, port, "/ready", periodSeconds=1, failureThreshold=2
        ),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": JOB_UID,
            "runAsGroup": JOB_UID,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_labels = labels(spec, platform_id)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.name, "labels": pod_labels},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector(spec, platform_id)},
            # a failed start is reported by the platform: never wait ten minutes for it
            "progressDeadlineSeconds": max(60, int(ready_timeout) + 30),
            "revisionHistoryLimit": 0,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [container],
                    # a job never talks to the cluster's API, and sees no other job's Service
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": int(stop_grace),
                    "securityContext": {"runAsNonRoot": True, "fsGroup": JOB_UID},
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }


def service(spec: ReleaseSpec, platform_id: str) -> dict[str, Any]:
    artifact = spec.artifact
    assert isinstance(artifact, ImageArtifact)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "labels": labels(spec, platform_id)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec, platform_id),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": port_of(artifact)}],
        },
    }
