"""The job as the HTTP handlers see it: loading, the entrypoint's API, counters, limits."""

from __future__ import annotations

import logging
import os
import threading
import traceback
from pathlib import Path

from .async_runner import AsyncRunner
from .concurrency import ConcurrencyLimit
from .job_api import WEBVIEW_PATH, JobApi, describe_api
from .loader import InitError, load_entrypoint
from .metrics import JobMetrics
from .request_context import current_request

log = logging.getLogger("racetrack.job")


def _optional_int(name: str, minimum: int) -> int | None:
    """A limit from the environment; a value the manifest would refuse is a start-up error."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < minimum:
        raise SystemExit(f"{name}={value!r} is not a whole number >= {minimum}")
    return int(value)


class JobState:
    """Shared across request threads. Loading runs in the background: the server answers
    `/live` from the first moment, and `/ready` once `api` is set."""

    def __init__(self) -> None:
        self.api: JobApi | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.job_name = os.environ.get("JOB_NAME", "")
        self.job_version = os.environ.get("JOB_VERSION", "")
        self.git_version = os.environ.get("GIT_VERSION", "")
        # set per deployment by the platform: tells a new instance from one being replaced
        self.deployment_timestamp = os.environ.get("JOB_DEPLOYMENT_TIMESTAMP")
        self.platform_version = os.environ.get("DEPLOYED_BY_RACETRACK_VERSION")
        self.job_type_version = os.environ.get("JOB_TYPE_VERSION")
        # the router's key for this release's instances ("" when run outside the platform)
        self.upstream_key = os.environ.pop("RACETRACK_UPSTREAM_KEY", "")
        self.job_dir = Path(os.environ.get("JOB_DIR", "."))
        self.home_page = "/" + os.environ.get("HOME_PAGE", "/docs").lstrip("/")
        self.limit = ConcurrencyLimit(
            _optional_int("MAX_CONCURRENCY", 1), _optional_int("MAX_CONCURRENCY_QUEUE", 0)
        )
        self.metrics = JobMetrics()
        self.runner = AsyncRunner()
        self.stopping = False
        self._in_flight = 0
        self._idle = threading.Condition()

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "ready" if self.ready.is_set() else "starting"

    @property
    def webview_base_url(self) -> str:
        """Where the webview is reached through the router: Racetrack passes this prefix."""
        return f"/pub/job/{self.job_name}/{self.job_version}{WEBVIEW_PATH}"

    def load(self) -> None:
        try:
            entrypoint = load_entrypoint(
                self.job_dir,
                os.environ["ENTRYPOINT_PATH"],
                os.environ.get("ENTRYPOINT_CLASS") or None,
            )
            if not hasattr(entrypoint, "request_context"):
                entrypoint.request_context = current_request  # Racetrack jobs read headers so
            self.api = describe_api(entrypoint, self.job_dir, self.webview_base_url, self.runner)
        except InitError as exc:
            self.error = str(exc)
            log.error("initialization failed: %s", exc)
        except BaseException as exc:
            self.error = describe_exception(exc, str(self.job_dir))
            log.error("initialization failed:\n%s", traceback.format_exc())
        else:
            self.ready.set()
            log.info("entrypoint loaded: %s", type(self.api.entrypoint).__name__)

    def request_started(self) -> None:
        with self._idle:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


def describe_exception(exc: BaseException, job_dir: str) -> str:
    """`ModuleNotFoundError: No module named 'x' (adder.py, line 3)`: one line for the pusher."""
    if isinstance(exc, SyntaxError):  # its location is the file that failed to parse
        filename = os.path.relpath(exc.filename, job_dir) if exc.filename else "?"
        return f"{type(exc).__name__}: {exc.msg} ({filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    job_frames = [f for f in frames if f.filename.startswith(os.path.abspath(job_dir))]
    where = ""
    if job_frames:
        frame = job_frames[-1]
        where = f" ({os.path.relpath(frame.filename, job_dir)}, line {frame.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"
