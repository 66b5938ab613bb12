"""The objects the kubernetes runtime sends (the live suite has the API server dry-run them)."""

from buildpacks.build import ImageArtifact, Probe
from buildpacks.manifest import Resources
from controller.runtimes.base import ReleaseSpec
from controller.runtimes.kubernetes_objects import (
    ResourcePolicy,
    deployment,
    label_value,
    secret,
    service,
)

WRAPPER = Probe()
POLICY = ResourcePolicy()


def spec(resources: Resources | None = None, probe: Probe = WRAPPER, port: int | None = None):
    artifact = ImageArtifact(
        "127.0.0.1:5000/racetrack-job/adder:1.0.0-r3-abc", "sha256:feed", {"A": "1"}, port, probe
    )
    env = {"JOB_NAME": "adder", "AUTH_TOKEN": "s3cret", "MODE": "fast"}
    return ReleaseSpec("adder", "1.0.0", 3, artifact, env, 2, resources, family_slot=7)


def make(release: ReleaseSpec, policy: ResourcePolicy = POLICY) -> dict:
    return deployment(
        release,
        "p1",
        image=release.artifact.image,
        pull_policy="IfNotPresent",
        policy=policy,
        stop_grace=10,
        ready_timeout=60,
    )


def test_every_object_is_named_and_labelled_for_its_release():
    expected = {
        "racetrack.platform": "p1",
        "racetrack.job": "adder",
        "racetrack.version": "1.0.0",
        "racetrack.release": "3",
        "racetrack.release-name": "rt-adder-1-0-0-r3",
    }
    for body in (make(spec()), service(spec(), "p1"), secret(spec(), "p1")):
        assert body["metadata"] == {"name": "rt-adder-1-0-0-r3", "labels": expected}
    pods = make(spec())["spec"]
    assert pods["selector"]["matchLabels"] == {
        "racetrack.platform": "p1",
        "racetrack.release-name": "rt-adder-1-0-0-r3",
    }
    assert pods["template"]["metadata"]["labels"] == expected
    assert label_value("1.0.0-beta.1+build.7") == "1.0.0-beta.1_build.7"


def test_the_job_environment_is_in_the_secret_never_in_the_deployment():
    assert secret(spec(), "p1")["stringData"] == {
        "JOB_NAME": "adder",
        "AUTH_TOKEN": "s3cret",
        "MODE": "fast",
    }
    (container,) = make(spec())["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "rt-adder-1-0-0-r3"}}]
    plain = {e["name"]: e["value"] for e in container["env"]}
    assert plain == {"A": "1", "PORT": "7000", "LISTEN_HOST": "0.0.0.0",
                     "RACETRACK_SHUTDOWN_GRACE": "8.0"}  # fmt: skip
    assert "s3cret" not in str(make(spec()))


def test_replicas_probes_and_a_locked_down_pod():
    body = make(spec())
    assert body["spec"]["replicas"] == 2
    pod = body["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] == 10
    (container,) = pod["containers"]
    assert container["image"] == "127.0.0.1:5000/racetrack-job/adder:1.0.0-r3-abc"
    assert container["startupProbe"]["httpGet"] == {"path": "/live", "port": 7000}
    assert container["startupProbe"]["failureThreshold"] * 2 >= 60  # the ready timeout
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    tcp = make(spec(probe=Probe("tcp"), port=7001))["spec"]["template"]["spec"]["containers"][0]
    assert tcp["readinessProbe"]["tcpSocket"] == {"port": 7001}
    http = make(spec(probe=Probe("http", "/healthz")))["spec"]["template"]["spec"]["containers"][0]
    assert http["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert service(spec(port=7001), "p1")["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 7001}
    ]


def test_requests_and_limits_default_as_on_racetrack_and_never_cross():
    policy = ResourcePolicy()
    assert policy.requirements(spec()) == {
        "requests": {"memory": "256Mi", "cpu": "10m"},
        "limits": {"memory": "1Gi", "cpu": "1000m"},
    }
    small = spec(Resources(memory_max="64Mi", cpu_max="5m"))
    assert policy.requirements(small) == {
        "requests": {"memory": "64Mi", "cpu": "5m"},
        "limits": {"memory": "64Mi", "cpu": "5m"},
    }
    big = spec(Resources(memory_min="2Gi", cpu_min="3"))
    assert policy.requirements(big) == {
        "requests": {"memory": "2Gi", "cpu": "3"},
        "limits": {"memory": "2Gi", "cpu": "3"},
    }


def test_the_cap_refuses_naming_the_field_and_the_flag():
    policy = ResourcePolicy(max_memory="4Gi", max_cpu="2")
    assert policy.check(spec(Resources(memory_max="4Gi", cpu_max="2"))) is None
    assert policy.check(spec(Resources(memory_max="5Gi"))) == (
        "resources.memory_max 5Gi is over this cluster's cap of 4Gi (--k8s-max-memory)"
    )
    assert policy.check(spec(Resources(cpu_min="2500m"))) == (
        "resources.cpu_min 2500m is over this cluster's cap of 2 (--k8s-max-cpu)"
    )
