import logging
import os
import pathlib
import time
from dataclasses import dataclass
from typing import Literal

from racetrack_job_wrapper.log.context_error import wrap_context
from racetrack_job_wrapper.log.logs import get_logger

logger = get_logger(__name__)
logging.getLogger("plain").info("plain logging works as well")


@dataclass
class Summary:
    total: float
    count: int


class JobEntrypoint:
    """Adds numbers, and shows off the rest of the python3 convention."""

    def __init__(self) -> None:
        with wrap_context("loading the guide"):
            self.guide = pathlib.Path("model/assets/guide.html").read_text()
        self.calls = 0

    def perform(self, numbers: list[float], mode: Literal["sum", "mean"] = "sum") -> float:
        """Add up the numbers, or average them.

        :param numbers: the numbers to combine
        :param mode: sum or mean
        :return: the combined value
        """
        self.calls += 1
        logger.info("combining %d numbers", len(numbers))
        if not numbers and mode == "mean":
            raise ValueError("the mean of no numbers is undefined")
        total = sum(numbers)
        return total / len(numbers) if mode == "mean" else total

    def summary(self, numbers: list[float]) -> Summary:
        """Sum and count in one answer."""
        return Summary(sum(numbers), len(numbers))

    def greet(self, name: str = "world") -> str:
        return f"{os.environ['GREETING']}, {name}"

    def hold(self, seconds: float = 2.0) -> str:
        """Keep the job busy for a while (to see max_concurrency at work)."""
        time.sleep(min(seconds, 30))
        return "held"

    def auxiliary_endpoints(self):
        return {"/summary": self.summary, "/greet": self.greet, "/hold": self.hold}

    def docs_input_examples(self):
        return {"/perform": {"numbers": [40, 2], "mode": "sum"}, "/summary": {"numbers": [1, 2]}}

    def static_endpoints(self):
        return {
            "/guide": ("model/assets/guide.html", "text/html"),
            "/manifest": "job.yaml",
            "/assets": "model/assets/img",
        }

    def metrics(self):
        return [{"name": "showcase_calls", "value": self.calls, "description": "perform calls"}]
