import aiohttp
import numpy as np
from racetrack_job_wrapper.call import call_job, call_job_coroutine
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


class JobEntrypoint:
    def perform(self, numbers: list[float]) -> dict:
        """Chain to the showcase job through the router, with this family's token."""
        total = call_job(self, "python3-showcase", "/api/v1/perform", {"numbers": numbers})
        return {"aiohttp": aiohttp.__version__, "total": total, "squares": np.square(numbers)}

    async def chained(self, numbers: list[float]) -> dict:
        """The same call from async code."""
        return await call_job_coroutine(
            self, "python3-showcase", "/api/v1/summary", {"numbers": numbers}, version="1.x"
        )

    def auxiliary_endpoints(self):
        return {"/chained": self.chained}

    def webview_app(self, base_url: str):
        async def index(request):
            return JSONResponse({"root_path": request.scope["root_path"],
                                 "path": request.url.path, "base_url": base_url})

        return Starlette(routes=[Route("/", index), Route("/items/{item}", index)])
