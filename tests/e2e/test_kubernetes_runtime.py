"""`racetrack serve --runtime kubernetes` against the real cluster scripts/setup-kubernetes runs
(etcd, kube-apiserver, controller-manager, scheduler, a kubelet with containerd, a registry on
127.0.0.1:5000). Each platform here has a namespace of its own.

In CI (CI=true) a missing cluster fails these tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from buildpacks.build import ImageArtifact, Probe
from buildpacks.manifest import Resources
from controller.runtime_setup import RuntimeSettings, connect_kubernetes
from controller.runtimes.base import FailureReason, ReleaseFailed, ReleaseSpec
from controller.runtimes.kubernetes import KubernetesRuntime, KubernetesSettings
from controller.runtimes.names import release_name
from tests.e2e.test_zero_downtime import check_calls, redeploy_under_load
from tests.harness import (
    JobRepo,
    Server,
    fixture_files,
    kubernetes_flags,
    kubernetes_namespace,
    python_job,
    remove_docker_leftovers,
    wait_for,
)
from tests.harness import kubectl as cluster_kubectl
from tests.load import Load

BASE_IMAGE = "racetrack/python3-base:bookworm"


FOUND, PROBLEM = kubernetes_flags()
if FOUND is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"kubernetes tests must run in CI: {PROBLEM}")
    pytest.skip(PROBLEM, allow_module_level=True)
FLAGS: tuple[str, ...] = FOUND
KUBECONFIG = FLAGS[FLAGS.index("--kubeconfig") + 1]


def kubectl(*args: str, check: bool = True) -> str:
    return cluster_kubectl(FLAGS, *args, check=check)


def objects_of(namespace: str, job: str) -> dict[str, list[dict]]:
    """This job's Deployments, Services, Secrets and pods, by kind."""
    listed = json.loads(
        kubectl("-n", namespace, "get", "deployments,services,secrets,pods", "-l",
                f"racetrack.job={job}", "-o", "json")
    )  # fmt: skip
    found: dict[str, list[dict]] = {}
    for item in listed["items"]:
        found.setdefault(item["kind"], []).append(item)
    return found


def platform(tmp: Path, namespace: str, *extra: str) -> Server:
    return Server(
        tmp,
        extra_args=(
            *FLAGS,
            "--k8s-namespace", namespace,
            "--python-base-image", BASE_IMAGE,
            "--ready-timeout", "90",
            "--reconcile-interval", "2",
            *extra,
        ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    with kubernetes_namespace(FLAGS) as name:
        yield name


@pytest.fixture(scope="module")
def kserver(tmp_path_factory: pytest.TempPathFactory, namespace: str) -> Iterator[Server]:
    running = platform(tmp_path_factory.mktemp("racetrack-k8s"), namespace).start()
    yield running
    running.stop()
    remove_docker_leftovers(running.data_dir)  # the build engine's copies of its images


@pytest.fixture(scope="module")
def ktoken(kserver: Server) -> str:
    return kserver.token()


def test_deploy_redeploy_and_a_second_version_with_replicas_limits_and_a_secret(
    kserver, ktoken, namespace, workdir, job_name
):
    manifest = (
        "replicas: 2\nresources:\n  memory_max: 300Mi\n  cpu_max: 500m\n"
        "runtime_env:\n  GREETING: hello\n"
    )
    files = python_job(job_name, "return [sum(numbers), os.environ['GREETING']]",
                       extra_manifest=manifest)  # fmt: skip
    files["entry.py"] = "import os\n" + files["entry.py"]
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = kserver.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert "Pushing 127.0.0.1:5000/racetrack-job/" in pushed.stderr
    assert kserver.call(job_name, "latest", payload={"numbers": [1, 2]}, token=ktoken) == (
        200,
        [3, "hello"],
    )

    found = objects_of(namespace, job_name)
    name = release_name(job_name, "1.0.0", 1)
    (deployment,) = found["Deployment"]
    assert deployment["metadata"]["name"] == name
    assert deployment["metadata"]["labels"]["racetrack.release"] == "1"
    assert deployment["spec"]["replicas"] == 2 and deployment["status"]["readyReplicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"memory": "300Mi", "cpu": "500m"}
    assert container["resources"]["requests"] == {"memory": "256Mi", "cpu": "10m"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    plain = {e["name"]: e.get("value") for e in container["env"]}
    assert "GREETING" not in plain and "AUTH_TOKEN" not in plain, "job values stay in the Secret"
    assert "RACETRACK_UPSTREAM_KEY" not in plain
    (secret,) = found["Secret"]
    assert "GREETING" in secret["data"] and "AUTH_TOKEN" in secret["data"]
    assert [s["metadata"]["name"] for s in found["Service"]] == [name]
    assert len(found["Pod"]) == 2

    # a code-only change: a new release beside the old one, then the old one's objects go
    repo.commit({**files, "entry.py": files["entry.py"].replace("sum(numbers)", "max(numbers)")})
    assert kserver.push(repo).returncode == 0
    assert kserver.call(job_name, "latest", payload={"numbers": [1, 2]}, token=ktoken)[1] == [
        2,
        "hello",
    ]
    wait_for(
        lambda: (
            [d["metadata"]["name"] for d in objects_of(namespace, job_name)["Deployment"]]
            == [release_name(job_name, "1.0.0", 2)]
        ),
        "the replaced release's Deployment to be deleted",
    )

    # a second version serves beside the first
    second = python_job(job_name, "return 'two'", version="2.0.0", signature="")
    repo.commit(second)
    assert kserver.push(repo).returncode == 0
    assert kserver.call(job_name, "2.0.0", payload={}, token=ktoken) == (200, "two")
    assert kserver.call(job_name, "1.0.0", payload={"numbers": [5]}, token=ktoken)[0] == 200
    logs = kserver.ssh("logs", job_name, "--version", "1.0.0", "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    pods = [
        p["metadata"]["name"]
        for p in objects_of(namespace, job_name)["Pod"]
        if p["metadata"]["labels"]["racetrack.release"] == "2"
    ]
    assert len(pods) == 2 and all(f"[{pod}] " in logs.stdout for pod in pods), logs.stdout


def test_redeploys_and_a_rollback_under_load_drop_nothing(kserver, ktoken, workdir, job_name):
    check_calls(redeploy_under_load(kserver, ktoken, workdir, job_name))


def test_a_pod_deleted_by_hand_is_replaced_while_the_other_serves(
    kserver, ktoken, namespace, workdir, job_name
):
    repo = JobRepo.create(
        workdir / "job", job_name, python_job(job_name, "return 1", signature="",
                                              extra_manifest="replicas: 2\n")
    )  # fmt: skip
    assert kserver.push(repo).returncode == 0
    (victim, _other) = sorted(p["metadata"]["name"] for p in objects_of(namespace, job_name)["Pod"])
    url = f"{kserver.router_url}/pub/job/{job_name}/latest/api/v1/perform"
    with Load(url, ktoken, clients=2, payload={}) as load:
        load.wait_for_calls(20)
        kubectl("-n", namespace, "delete", "pod", victim, "--wait=false")

        def replaced() -> bool:
            pods = objects_of(namespace, job_name).get("Pod", [])
            names = {
                p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")
            }
            ready = [
                p for p in pods
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in p.get("status", {}).get("conditions", []))
            ]  # fmt: skip
            return victim not in names and len(ready) == 2

        wait_for(replaced, "Kubernetes to replace the deleted pod", deadline=120)
        load.wait_for_calls(20)
    failed = [c for c in load.calls if not c.ok]
    assert not failed, f"{len(failed)} of {len(load.calls)} calls failed: {failed[:3]}"


def test_scale_runs_a_release_of_n_replicas(kserver, ktoken, namespace, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name, "return 1", signature=""))
    assert kserver.push(repo).returncode == 0
    scaled = kserver.ssh("ps:scale", job_name, "3")
    assert scaled.returncode == 0, scaled.stderr
    scaled_name = release_name(job_name, "1.0.0", 2)
    wait_for(
        lambda: (
            [d["metadata"]["name"] for d in objects_of(namespace, job_name)["Deployment"]]
            == [scaled_name]
        ),
        "the unscaled release's Deployment to be deleted",
    )
    (deployment,) = objects_of(namespace, job_name)["Deployment"]
    assert deployment["spec"]["replicas"] == 3 and deployment["status"]["readyReplicas"] == 3
    info = json.loads(kserver.ssh("jobs:info", job_name, "--json").stdout)
    assert [i["up"] for i in info["versions"][0]["instances"]] == [True, True, True]


@pytest.mark.parametrize(
    ("case", "files_of", "expected"),
    [
        (
            "crash",
            lambda job: {**python_job(job), "entry.py": "import os\nos._exit(3)\n"},
            "exited with status 3 before it was ready",
        ),
        (
            "init-error",
            lambda job: {**python_job(job), "entry.py": "raise RuntimeError('no config here')\n"},
            "no config here",
        ),
        (
            "oom",
            lambda job: {
                **python_job(job, extra_manifest="resources:\n  memory_max: 64Mi\n"),
                "entry.py": "hog = b'x' * (400 * 2**20)\n"
                "class JobEntrypoint:\n    def perform(self):\n        return 1\n",
            },
            "out of memory",
        ),
        (
            "unschedulable",
            lambda job: python_job(
                job, extra_manifest="resources:\n  cpu_min: '3'\n  cpu_max: '3'\n"
            ),
            "cannot be scheduled",
        ),
        (
            "over-the-cap",
            lambda job: python_job(job, extra_manifest="resources:\n  memory_max: 64Gi\n"),
            "over this cluster's cap of 8Gi (--k8s-max-memory)",
        ),
    ],
)
def test_a_release_that_cannot_run_is_rejected_with_the_reason_and_nothing_changes(
    kserver, ktoken, namespace, workdir, job_name, case, files_of, expected
):
    repo = JobRepo.create(
        workdir / "job", job_name, python_job(job_name, "return 'old'", signature="")
    )
    assert kserver.push(repo).returncode == 0
    repo.commit(files_of(job_name), case)
    pushed = kserver.push(repo)
    assert pushed.returncode != 0
    assert expected in pushed.stderr, pushed.stderr
    assert kserver.call(job_name, "latest", payload={}, token=ktoken) == (200, "old")
    wait_for(
        lambda: (
            [d["metadata"]["name"] for d in objects_of(namespace, job_name)["Deployment"]]
            == [release_name(job_name, "1.0.0", 1)]
        ),
        "the failed release's objects to be removed",
    )
    assert len(objects_of(namespace, job_name)["Secret"]) == 1


def test_jobs_delete_leaves_no_object(kserver, namespace, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert kserver.push(repo).returncode == 0
    assert kserver.ssh("jobs:delete", job_name, "1.0.0").returncode == 0
    assert objects_of(namespace, job_name) == {}


def test_a_killed_platform_adopts_its_release_and_reconcile_removes_an_orphan(
    tmp_path, namespace, workdir, job_name
):
    server = platform(tmp_path / "platform", namespace).start()
    try:
        repo = JobRepo.create(
            workdir / "job", job_name, python_job(job_name, "return 'kept'", signature="")
        )
        assert server.push(repo).returncode == 0
        (pod,) = objects_of(namespace, job_name)["Pod"]
        identity = (server.data_dir / "platform-id").read_text().strip()
        orphan = release_name(job_name, "0.0.9", 99)  # as a deploy cut short by a crash leaves
        kubectl("-n", namespace, "create", "deployment", orphan, f"--image={BASE_IMAGE}",
                "--", "sleep", "600")  # fmt: skip
        kubectl("-n", namespace, "label", "deployment", orphan, f"racetrack.platform={identity}",
                f"racetrack.job={job_name}", f"racetrack.release-name={orphan}")  # fmt: skip

        server.stop(signal.SIGKILL)
        server.start()
        token = server.token()
        wait_for(
            lambda: server.call(job_name, "latest", payload={}, token=token) == (200, "kept"),
            "the adopted release to be routed",
        )
        (after,) = objects_of(namespace, job_name)["Pod"]
        assert after["metadata"]["uid"] == pod["metadata"]["uid"], "adopted, not started again"
        wait_for(
            lambda: (
                [d["metadata"]["name"] for d in objects_of(namespace, job_name)["Deployment"]]
                == [release_name(job_name, "1.0.0", 1)]
            ),
            "reconcile to delete the orphaned Deployment",
        )
    finally:
        server.stop()
        remove_docker_leftovers(server.data_dir)


def test_an_unreachable_cluster_stops_the_start_with_the_reason(tmp_path):
    kubeconfig = Path(KUBECONFIG).read_text()
    closed = kubeconfig.replace("https://127.0.0.1:6443", "https://127.0.0.1:1")
    assert closed != kubeconfig, "the kubeconfig names the API server this test expects"
    (tmp_path / "closed.kubeconfig").write_text(closed)
    flags = list(FLAGS)
    flags[flags.index("--kubeconfig") + 1] = str(tmp_path / "closed.kubeconfig")
    started = time.monotonic()
    result = subprocess.run(
        [*Server.launcher, "--data-dir", str(tmp_path / "data"), "--ssh-port", "0",
         "--router-port", "0", "--api-port", "0", *flags],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "racetrack: --runtime kubernetes: the cluster at https://127.0.0.1:1 does not answer"
        in (result.stderr)
    ), result.stderr
    assert time.monotonic() - started < 60


def live_spec(image: str, resources: Resources | None = None) -> ReleaseSpec:
    artifact = ImageArtifact(image, "sha256:none", {}, None, Probe())
    return ReleaseSpec("live", "1.0.0", 1, artifact, {"JOB_NAME": "live"}, 1, resources)


async def live_runtime(namespace: str) -> KubernetesRuntime:
    """The runtime itself, as `racetrack serve` connects it, on the real cluster."""
    settings = RuntimeSettings(
        kind="kubernetes",
        kubeconfig=Path(KUBECONFIG),
        kubernetes=KubernetesSettings(namespace=namespace),
    )
    return await connect_kubernetes(settings, "live-test")


def test_the_api_server_admits_the_objects_the_runtime_sends(namespace):
    async def dry_runs() -> str:
        runtime = await live_runtime(namespace)
        try:
            await runtime.dry_run(live_spec("127.0.0.1:5000/racetrack/python3-base:bookworm"))
            crossed = live_spec("x:1", Resources(cpu_min="2", cpu_max="1"))
            try:
                await runtime.dry_run(crossed)
            except ApiException as exc:
                return str(exc.body)
            return "admitted"
        finally:
            await runtime.close()

    refusal = asyncio.run(dry_runs())
    assert "must be less than or equal to cpu limit" in refusal
    assert kubectl("-n", namespace, "get", "deployments,services,secrets", "-l",
                   "racetrack.platform=live-test", "-o", "name") == ""  # fmt: skip


def test_an_image_that_cannot_be_pulled_is_a_typed_failure(namespace):
    async def start() -> ReleaseFailed:
        runtime = await live_runtime(namespace)
        try:
            release = await runtime.start(live_spec("127.0.0.1:5000/racetrack-job/gone:never"))
            try:
                await runtime.wait_ready(release, 60)
            except ReleaseFailed as exc:
                return exc
            finally:
                await runtime.stop(release)
            raise AssertionError("a release without its image became ready")
        finally:
            await runtime.close()

    failure = asyncio.run(start())
    assert failure.reason == FailureReason.IMAGE_PULL
    assert "cannot pull its image 127.0.0.1:5000/racetrack-job/gone:never" in str(failure)
    assert kubectl("-n", namespace, "get", "deployments,services,secrets,pods", "-l",
                   "racetrack.platform=live-test", "-o", "name") == ""  # fmt: skip


def test_the_platforms_own_manifests_are_admitted_by_the_api_server(namespace, tmp_path):
    """deploy/kubernetes/, moved into this test's namespace, through a server-side dry run."""
    documents = []
    for name in ("rbac.yaml", "platform.yaml"):
        text = (Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / name).read_text()
        documents.append(text.replace("namespace: racetrack", f"namespace: {namespace}"))
    moved = tmp_path / "platform.yaml"
    moved.write_text("\n---\n".join(documents))
    applied = kubectl("apply", "--dry-run=server", "-f", str(moved))
    for kind in ("serviceaccount/racetrack", "role.rbac.authorization.k8s.io/racetrack-controller",
                 "deployment.apps/racetrack", "service/racetrack-ssh", "service/racetrack-router",
                 "persistentvolumeclaim/racetrack-data"):  # fmt: skip
        assert f"{kind} created (server dry run)" in applied, applied
    namespace_doc = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "namespace.yaml"
    assert "namespace/racetrack" in kubectl("apply", "--dry-run=server", "-f", str(namespace_doc))


class Forwarder:
    """A TCP relay to the API server that the test can cut: the cluster becomes unreachable
    for the platform while its pods, and the router's calls to them, go on."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self._listener.close()
        for connection in self._open:
            with contextlib.suppress(OSError):
                connection.close()


def test_a_cluster_unreachable_at_deploy_time_rejects_the_push_and_the_job_keeps_serving(
    tmp_path, namespace, workdir, job_name
):
    relay = Forwarder(("127.0.0.1", 6443))
    kubeconfig = Path(KUBECONFIG).read_text()
    relayed = kubeconfig.replace("https://127.0.0.1:6443", f"https://127.0.0.1:{relay.port}")
    (tmp_path / "relayed.kubeconfig").write_text(relayed)
    flags = list(FLAGS)
    flags[flags.index("--kubeconfig") + 1] = str(tmp_path / "relayed.kubeconfig")
    server = Server(
        tmp_path / "platform",
        extra_args=(*flags, "--k8s-namespace", namespace, "--python-base-image", BASE_IMAGE),
    ).start()
    try:
        repo = JobRepo.create(
            workdir / "job", job_name, python_job(job_name, "return 'up'", signature="")
        )
        assert server.push(repo).returncode == 0
        token = server.token()
        relay.cut()
        repo.commit(python_job(job_name, "return 'new'", signature=""))
        pushed = server.push(repo)
        assert pushed.returncode != 0
        assert f"the cluster at https://127.0.0.1:{relay.port} does not answer" in pushed.stderr
        assert server.call(job_name, "latest", payload={}, token=token) == (200, "up")
        listed = server.ssh("jobs:list")
        assert listed.returncode == 0 and "running" in listed.stdout
    finally:
        server.stop()
        remove_docker_leftovers(server.data_dir)


def test_the_user_guides_job_runs_under_dns_names(kserver, ktoken, namespace, workdir):
    files = fixture_files("user-guide")
    name = "my_fantabulous_skynet_AI"
    pushed = kserver.push(JobRepo.create(workdir / "guide", name, files))
    assert pushed.returncode == 0, pushed.stderr
    assert kserver.call(name, "latest", payload={"x": 40, "y": 2}, token=ktoken) == (200, 42)
    (deployment,) = objects_of(namespace, name)["Deployment"]
    assert deployment["metadata"]["name"] == release_name(name, "0.0.1", 1)
    assert deployment["metadata"]["name"].startswith("rt-my-fantabulous-skynet-ai-")


def test_an_object_of_another_owner_under_a_releases_name_is_left_alone(
    kserver, namespace, workdir, job_name
):
    """Two platforms sharing a namespace, or an unrelated object: the deploy is refused naming
    it, and the object is not touched."""
    name = release_name(job_name, "1.0.0", 1)
    kubectl("-n", namespace, "create", "secret", "generic", name, "--from-literal=mine=yes")
    kubectl("-n", namespace, "label", "secret", name, "racetrack.platform=another")
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    pushed = kserver.push(repo)
    assert pushed.returncode != 0
    assert (
        f"secret {name} already exists in namespace {namespace} and is not this platform's"
        " (racetrack.platform='another')"
    ) in pushed.stderr
    kept = json.loads(kubectl("-n", namespace, "get", "secret", name, "-o", "json"))
    assert (
        kept["data"] == {"mine": "eWVz"}
        and kept["metadata"]["labels"]["racetrack.platform"] == "another"
    )
