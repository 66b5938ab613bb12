"""The `racetrack` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import sys
from collections.abc import Callable
from pathlib import Path

from buildpacks.docker_build import DockerBuildSettings
from controller.accounts import BadPublicKey
from controller.errors import StartupError
from controller.platform import Platform, Settings, display_host
from controller.runtime_setup import RuntimeSettings
from controller.runtimes.docker import HOST_NETWORK
from controller.runtimes.kubernetes import KubernetesSettings
from controller.runtimes.kubernetes_objects import ResourcePolicy
from controller.runtimes.log_files import LogSettings
from controller.runtimes.resources import cpu_cores, memory_bytes
from controller.runtimes.sandbox import DEFAULT_JOB_USER_BASE


def _integer(what: str, low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, refused naming `what`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not {what} ({low}-{high})")
        return value

    return parse


_port = _integer("a port number", 0, 65535)
_uid = _integer("a uid", 1000, 2**31 - 1_000_000)
_count = _integer("a number", 1, 1_000_000)


def _size(text: str) -> int:
    try:
        size = memory_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 100Mi or 50000") from None
    if size < 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is smaller than 1 KiB")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="racetrack", description="git push your code, get a routed HTTP service"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run every component in one process")
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".racetrack-data"),
        help="where the database, repos, artifacts and logs live",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--ssh-port", type=_port, default=2222, help="git push and commands")
    serve.add_argument("--router-port", type=_port, default=7105, help="job calls (/pub/job/...)")
    serve.add_argument("--api-port", type=_port, default=7102, help="controller API")
    serve.add_argument(
        "--runtime",
        choices=("local", "docker", "kubernetes"),
        default="local",
        help="where job instances run",
    )
    serve.add_argument(
        "--admin-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an OpenSSH public key to register as an admin (repeatable)",
    )
    serve.add_argument("--public-url", help="base URL of the router in printed job URLs")
    serve.add_argument(
        "--secrets-key-file",
        type=Path,
        metavar="FILE",
        help="the key that encrypts config and secret values in the store, mode 0600; created"
        " if missing (default: secrets.key in the data dir)",
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="let anyone call jobs without a token (local experiments only)",
    )
    serve.add_argument(
        "--auto-approve-public-endpoints",
        action="store_true",
        help="a push approves the public_endpoints its job.yaml declares, without an admin's"
        " endpoints:approve (single-user installations)",
    )
    serve.add_argument(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds a new instance may take to become ready",
    )
    serve.add_argument(
        "--reconcile-interval",
        type=float,
        default=30.0,
        help="seconds between passes that converge what the runtime runs with what serves",
    )
    serve.add_argument(
        "--stop-grace",
        type=float,
        default=10.0,
        help="seconds between SIGTERM and SIGKILL when stopping an instance",
    )
    serve.add_argument(
        "--drain-grace",
        type=float,
        default=30.0,
        help="seconds calls already routed to a replaced release may take before it is stopped",
    )
    serve.add_argument(
        "--deploy-wait",
        type=float,
        default=600.0,
        help="seconds a deploy waits for the one of the same job already running",
    )
    serve.add_argument(
        "--ssh-keepalive",
        type=float,
        default=15.0,
        help="seconds between SSH keepalives (long builds survive idle timeouts)",
    )
    serve.add_argument(
        "--max-push-size",
        type=_size,
        default="100Mi",
        metavar="SIZE",
        help="largest pack a push may send, e.g. 100Mi (a larger push is refused, repo unchanged)",
    )
    serve.add_argument(
        "--max-push-inflated",
        type=_size,
        metavar="SIZE",
        help="what a push may inflate to (default: 10 times --max-push-size); refused while it"
        " arrives, repo unchanged",
    )
    serve.add_argument(
        "--max-object-size",
        type=_size,
        default="100Mi",
        metavar="SIZE",
        help="the largest file (git object) a push may hold, inflated",
    )
    serve.add_argument(
        "--git-idle-timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="a git client that sends and takes nothing this long is disconnected",
    )
    serve.add_argument(
        "--max-git-sessions-per-user",
        type=_count,
        default=8,
        metavar="N",
        help="git pushes and fetches one user may run at once",
    )
    serve.add_argument(
        "--auth-cache",
        type=float,
        default=10.0,
        help="seconds the router remembers that a caller may call an endpoint (grants,"
        " revocations and removals apply at once)",
    )
    serve.add_argument(
        "--name-claim-grace",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="after a failed first deploy, the job name stays the pusher's this long (to retry)",
    )
    serve.add_argument(
        "--upstream-timeout",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="a job's time to start answering a call before the caller gets 504",
    )
    serve.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="an HTTP client's time to send a request's head before it is disconnected",
    )
    serve.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    _local_flags(serve.add_argument_group("local runtime"))
    _docker_flags(serve.add_argument_group("docker runtime"))
    _kubernetes_flags(serve.add_argument_group("kubernetes runtime"))
    return parser


def _local_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--insecure-single-user",
        action="store_true",
        help="run jobs without isolation, with the platform's own rights (one user only: for a"
        " machine nobody else uses, where bubblewrap cannot run)",
    )
    group.add_argument(
        "--job-user-base",
        type=_uid,
        default=DEFAULT_JOB_USER_BASE,
        metavar="UID",
        help="as root, each job family runs as uid UID + its number",
    )
    group.add_argument(
        "--log-max-size",
        type=_size,
        default="10Mi",
        metavar="SIZE",
        help="an instance's log file rotates at this size",
    )
    group.add_argument(
        "--log-keep",
        type=_count,
        default=3,
        metavar="N",
        help="log files kept per instance (the current one and N-1 rotated ones)",
    )


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 86400 seconds")
    return seconds


def _docker_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--docker-network",
        default=HOST_NETWORK,
        metavar="NAME",
        help="'host' (each container on its own loopback port) or a network where containers"
        " are reached by name",
    )
    group.add_argument(
        "--python-base-image",
        metavar="IMAGE",
        help="base of python3 job images (default: python:<python_version or 3.11>-slim)",
    )
    group.add_argument(
        "--golang-base-image",
        default=DockerBuildSettings.golang_base_image,
        metavar="IMAGE",
        help="image that compiles golang jobs",
    )
    group.add_argument(
        "--golang-runtime-image",
        default=DockerBuildSettings.golang_runtime_image,
        metavar="IMAGE",
        help="image golang job binaries run on",
    )
    group.add_argument(
        "--build-ca-bundle",
        type=Path,
        metavar="FILE",
        help="CA bundle trusted by pip and apt inside image builds (corporate proxy or mirror)",
    )
    group.add_argument("--pip-index-url", metavar="URL", help="pip's index inside image builds")
    group.add_argument(
        "--keep-images",
        type=int,
        default=5,
        metavar="N",
        help="keep the images of each job's newest N releases, for rollbacks",
    )


def _memory_quantity(text: str) -> str:
    try:
        memory_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _cpu_quantity(text: str) -> str:
    try:
        cpu_cores(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU quantity like 500m or 2") from None
    return text


def _kubernetes_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="the cluster to run jobs in (default: the in-cluster service account)",
    )
    group.add_argument("--k8s-namespace", default="racetrack", metavar="NAME")
    group.add_argument(
        "--k8s-image-pull-policy",
        default="IfNotPresent",
        choices=("IfNotPresent", "Always", "Never"),
    )
    group.add_argument(
        "--registry",
        metavar="HOST[:PORT][/PREFIX]",
        help="where job images are pushed and pulled from (needed by the kubernetes runtime)",
    )
    group.add_argument(
        "--k8s-route-via",
        default="auto",
        choices=("auto", "pods", "service"),
        help="the router reaches a release through its ready pods' addresses (the platform"
        " outside the cluster) or its Service (inside); auto: service when in the cluster",
    )
    group.add_argument(
        "--k8s-max-memory",
        default=ResourcePolicy.max_memory,
        type=_memory_quantity,
        metavar="QUANTITY",
        help="no job may ask for more memory than this",
    )
    group.add_argument(
        "--k8s-max-cpu",
        default=ResourcePolicy.max_cpu,
        type=_cpu_quantity,
        metavar="QUANTITY",
        help="no job may ask for more CPU than this",
    )


def _raise_descriptor_limit() -> None:
    """Up to the hard limit: every connection, pipe and log holds a descriptor, and the servers'
    own caps (connections, sessions) are meant to be what refuses, not the kernel."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):  # above the kernel's nr_open: keep it
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _raise_descriptor_limit()
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("dulwich").setLevel(logging.WARNING)
    settings = Settings(
        data_dir=args.data_dir,
        host=args.host,
        ssh_port=args.ssh_port,
        router_port=args.router_port,
        api_port=args.api_port,
        runtime=RuntimeSettings(
            kind=args.runtime,
            host=display_host(args.host),
            stop_grace=args.stop_grace,
            ready_timeout=args.ready_timeout,
            docker_network=args.docker_network,
            insecure_single_user=args.insecure_single_user,
            job_user_base=args.job_user_base,
            logs=LogSettings(max_bytes=args.log_max_size, keep=args.log_keep),
            build=DockerBuildSettings(
                python_base_image=args.python_base_image,
                golang_base_image=args.golang_base_image,
                golang_runtime_image=args.golang_runtime_image,
                ca_bundle=args.build_ca_bundle,
                pip_index_url=args.pip_index_url,
                registry=args.registry,
            ),
            kubeconfig=args.kubeconfig,
            kubernetes=KubernetesSettings(
                namespace=args.k8s_namespace,
                pull_policy=args.k8s_image_pull_policy,
                policy=ResourcePolicy(max_memory=args.k8s_max_memory, max_cpu=args.k8s_max_cpu),
                via_service=args.k8s_route_via == "service",
                stop_grace=args.stop_grace,
                ready_timeout=args.ready_timeout,
            ),
            k8s_route_via=args.k8s_route_via,
        ),
        admin_keys=tuple(args.admin_key),
        public_url=args.public_url,
        secrets_key_file=args.secrets_key_file,
        name_claim_grace=args.name_claim_grace,
        auth=not args.no_auth,
        auto_approve_public_endpoints=args.auto_approve_public_endpoints,
        ready_timeout=args.ready_timeout,
        keep_releases=args.keep_images,
        drain_grace=args.drain_grace,
        deploy_wait=args.deploy_wait,
        ssh_keepalive=args.ssh_keepalive,
        auth_cache=args.auth_cache,
        max_push_bytes=args.max_push_size,
        max_push_inflated=args.max_push_inflated,
        max_object_bytes=args.max_object_size,
        git_idle_timeout=args.git_idle_timeout,
        max_git_sessions_per_user=args.max_git_sessions_per_user,
        upstream_timeout=args.upstream_timeout,
        header_timeout=args.header_timeout,
        reconcile_interval=args.reconcile_interval,
    )
    try:
        asyncio.run(Platform(settings).run(lambda banner: print(banner, flush=True)))
    except (StartupError, BadPublicKey) as exc:
        print(f"racetrack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
