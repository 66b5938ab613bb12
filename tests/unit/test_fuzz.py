"""Fuzzing what strangers control: the SSH exec command, job.yaml, and admin command words.

No input may crash the server; every refusal is a clear, one-line message.
"""

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildpacks.manifest import ManifestError, decode_manifest, parse_manifest
from controller.accounts import Accounts
from controller.build_step import BuildStep
from controller.commands import COMMANDS, run_command
from controller.permissions import Permissions, Principal
from controller.releases import DeploySettings, make_releases
from controller.runtimes.local import LocalRuntime
from controller.services import Services
from controller.store import Store
from controller.store.sealing import SecretBox
from controller.tokens import TokenMinter
from gitreceiver.commands import AdminCommand, CommandError, GitCommand, parse_exec_command
from gitreceiver.repos import RepoStore

SECRETS = SecretBox(b"s" * 32)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_clear_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


@FUZZ
@given(st.text())
def test_exec_commands_parse_or_are_refused_with_a_reason(command):
    try:
        parsed = parse_exec_command(command)
    except CommandError as exc:
        assert one_clear_line(str(exc))
    else:
        assert isinstance(parsed, GitCommand | AdminCommand)


@FUZZ
@given(st.sampled_from(["git-receive-pack", "git-upload-pack"]), st.text())
def test_repository_paths_are_job_names_or_refused(service, path):
    try:
        parsed = parse_exec_command(f"{service} {path!r}")
    except CommandError as exc:
        assert one_clear_line(str(exc))
    else:
        assert isinstance(parsed, GitCommand)
        assert parsed.job.isascii() and "/" not in parsed.job and ".." not in parsed.job


@FUZZ
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000)))
def test_any_manifest_bytes_load_or_are_refused_with_reasons(raw):
    try:
        parse_manifest(decode_manifest(raw), expected_name="adder")
    except ManifestError as exc:
        assert exc.errors and all(one_clear_line(e) for e in exc.errors)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "name", "jobtype", "owner_email", "version", "git", "extends", "jobtype_extra", "build_env",
    "runtime_env", "secret_build_env_file", "secret_runtime_env_file", "labels",
    "public_endpoints", "replicas", "resources", "system_dependencies", "infrastructure_target",
    "image_type",
]  # fmt: skip
VALID = {
    "name": "adder",
    "owner_email": "a@b.c",
    "jobtype": "python3",
    "jobtype_extra": {"entrypoint_path": "adder.py"},
}


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_like, max_size=6))
def test_any_manifest_fields_validate_or_are_refused_with_reasons(changes):
    try:
        parse_manifest({**VALID, **changes}, expected_name="adder")
    except ManifestError as exc:
        assert exc.errors and all(one_clear_line(e) for e in exc.errors)


class FakeIO:
    """The SSH channel of an admin command, kept in memory."""

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    def out(self, text: str) -> None:
        self.stdout.append(text)

    def err(self, text: str) -> None:
        self.stderr.append(text)

    async def read_input(self, limit: int) -> bytes:
        return b"not a key"

    async def drain(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return True  # `logs -f` returns at once


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Services, asyncio.AbstractEventLoop]]:
    """The controller's real parts on a temporary data dir, nothing started."""
    data = tmp_path_factory.mktemp("fuzz")
    store = Store(data / "racetrack.db", secrets=SECRETS)
    accounts = Accounts(store, TokenMinter(b"k" * 32))
    accounts.create_user("admin", is_admin=True)
    runtime = LocalRuntime(data)
    releases = make_releases(
        store=store,
        build=BuildStep(
            repos=RepoStore(data / "repos"),
            buildpacks={},
            artifact_kind=runtime.artifact_kind,
            work_dir=data / "work",
        ),
        runtime=runtime,
        publish=lambda _snapshot: None,
        drain=lambda _urls, _grace: asyncio.sleep(0, True),
        settings=DeploySettings(public_url="http://127.0.0.1:1"),
    )
    services = Services(store, accounts, Permissions(store), releases, auth_required=True)
    loop = asyncio.new_event_loop()
    yield services, loop
    loop.close()
    store.close()


@FUZZ
@given(st.sampled_from(sorted(COMMANDS)), st.lists(st.text(max_size=30), max_size=5))
def test_admin_commands_never_crash_and_refuse_in_one_line(platform, name, words):
    services, loop = platform
    for who in (Principal("user", "admin", is_admin=True), Principal("esc", "stranger")):
        io = FakeIO()
        status = loop.run_until_complete(run_command(services, who, [name, *words], io))
        assert status in (0, 1)
        if status == 1:
            assert len(io.stderr) == 1, io.stderr
            assert one_clear_line(io.stderr[0]), io.stderr
            assert io.stderr[0].startswith("racetrack: ")
