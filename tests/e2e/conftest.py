import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server

_names = itertools.count(1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One platform shared by the tests that do not need their own (each uses its own jobs)."""
    # the default --auth-cache (10 s): grants and revocations apply at once all the same
    running = Server(tmp_path_factory.mktemp("racetrack")).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def token(server: Server) -> str:
    return server.token()


@pytest.fixture
def job_name(request: pytest.FixtureRequest) -> str:
    """A job name unique in the session, readable in logs: the test's name, shortened."""
    base = request.node.originalname.removeprefix("test_").replace("_", "-").lower()
    return f"{base[:50].strip('-')}-{next(_names)}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
