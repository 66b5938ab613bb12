"""`JobEntrypoint`, for jobs that like to subclass or type-hint the convention.

Nothing requires it: any class with `perform(self, **kwargs)` is an entrypoint. The optional
methods the wrapper looks for are listed here with what they return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class JobEntrypoint:
    """Racetrack's python3 convention: instantiated once, without arguments."""

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        """Answers POST /api/v1/perform; the JSON object body becomes keyword arguments."""
        raise NotImplementedError

    # Optional:
    #   docs_input_example(self) -> dict                  example body of /api/v1/perform
    #   docs_input_examples(self) -> dict[str, dict]      per endpoint path ('/perform', '/x')
    #   auxiliary_endpoints(self) -> dict[str, Callable]  '/explain' -> POST /api/v1/explain
    #   static_endpoints(self) -> dict[str, str | tuple[str, str]]   GET /api/v1/<path>
    #   webview_app(self, base_url: str) -> WSGI or ASGI app         /api/v1/webview/
    #   metrics(self) -> list[dict]                        {name, value, description?, labels?}


AuxiliaryEndpoints = dict[str, Callable[..., Any]]
