"""Log configuration: `LOG_LEVEL`, `LOG_STRUCTURED=true` for JSON lines, the tracing id on
every record logged while a call is handled. `get_logger` and `configure_logs` keep the names
Racetrack jobs import (`from racetrack_job_wrapper.log.logs import get_logger`)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from ..request_context import current_tracing_id

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(tracing_suffix)s"


class TracingFilter(logging.Filter):
    """Gives every record `tracing_id` (None outside a call) and a suffix for plain lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        tracing_id = current_tracing_id()
        record.tracing_id = tracing_id
        record.tracing_suffix = f" [tracing_id={tracing_id}]" if tracing_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_name": os.environ.get("JOB_NAME", ""),
            "job_version": os.environ.get("JOB_VERSION", ""),
        }
        if getattr(record, "tracing_id", None):
            entry["tracing_id"] = record.tracing_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def configure_logs(log_level: str | None = None) -> None:
    """Set up the root logger once for the wrapper and the job (later calls change the level)."""
    level_name = (log_level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    level = logging.getLevelName(level_name)
    root = logging.getLogger()
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    if any(getattr(h, "racetrack", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.racetrack = True  # type: ignore[attr-defined]
    handler.addFilter(TracingFilter())
    if _flag("LOG_STRUCTURED"):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root.addHandler(handler)
    if not isinstance(level, int):
        logging.getLogger("racetrack.job").warning(
            "LOG_LEVEL %r is not a level (DEBUG, INFO, WARNING, ERROR); using INFO", level_name
        )


def get_logger(logger_name: str) -> logging.Logger:
    """A logger writing through the job's configured handler."""
    return logging.getLogger(logger_name)
