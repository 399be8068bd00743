"""The ingress deployment: this project's frontend (frontend.app: grouping, coding, decode policy,
hedging, deadlines, the JSON/msgpack and V2 HTTP API) inside a Ray Serve replica, its workers
being the model deployments' replicas (rayserve.client).

Data flow: client -> Ray Serve's HTTP proxy -> **Ingress.__call__** -> the frontend's aiohttp app
(in this replica, on a unix socket: one HTTP implementation, not two) -> Service -> pinned calls
to ModelReplica deployments. ``predict`` serves other deployments' handle calls directly.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import tempfile
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from ray.exceptions import RayError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from frontend.app import create_app
from frontend.config import FrontendConfig
from frontend.errors import NotReady, PayloadTooLarge, ServingError, error_body
from frontend.handlers import SERVICE, parse_deadline, validate_queries
from frontend.pool import WorkerPool
from rayserve import admin
from rayserve.client import RayReplicaClient
from rayserve.directory import directory_for
from rayserve.settings import RaySettings

# hop-by-hop headers, and those the hop to the frontend sets itself; every other header is passed on
# (content type, bearer token, V2's Inference-Header-Content-Length, Retry-After, ...)
NOT_FORWARDED = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
                           "upgrade", "proxy-authorization", "proxy-connection", "trailer", "date", "server"})
KICK_TIMEOUT_S = 60.0


class Ingress:
    """One frontend per ingress replica; each groups the queries that reach it."""

    def __init__(self, data: Any, parity: Any | None, settings: dict[str, Any]) -> None:
        self.settings = RaySettings(**settings)
        self.cfg: FrontendConfig = self.settings.frontend_config()
        self.handles = {"data": data, "parity": parity}
        self._socket = os.path.join(tempfile.mkdtemp(prefix="parm-ray-"), "frontend.sock")
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._starting: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def _started(self) -> None:
        """Start the frontend on first use (Serve builds the replica outside its event loop)."""
        if self._starting is None:  # in a fresh context: the frontend's tasks are no request's children
            self._starting = asyncio.get_running_loop().create_task(self._start(), context=contextvars.Context())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        pool = WorkerPool(self.cfg, self._clients())
        app = create_app(self.cfg, self.settings.drain_timeout_s, pool=pool)
        admin.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, self._socket).start()
        self._runner = runner
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self._socket))
        await asyncio.gather(*(self._kick(h) for h in self.handles.values() if h is not None))

    def _clients(self) -> tuple[list[RayReplicaClient], list[RayReplicaClient]]:
        opts = {"connect_timeout_s": self.cfg.connect_timeout_s, "health_interval_s": self.cfg.health_interval_s,
                "health_timeout_s": self.cfg.health_timeout_s}
        out: dict[str, list[RayReplicaClient]] = {"data": [], "parity": []}
        for role, deployment, slots, serves in self.settings.layout():
            directory = directory_for(self.settings.directory_key(deployment))
            directory.configure(slots)
            handle = self.handles[role]
            pinned = self.settings.routing == "pinned"
            out[serves] += [RayReplicaClient(handle, deployment, directory, i, serves, pinned, **opts)
                            for i in range(slots)]
        return out["data"], out["parity"]

    @staticmethod
    async def _kick(handle: Any) -> None:
        """One unpinned call, so Ray creates the handle's router, which then reports the replicas."""
        with contextlib.suppress(RayError, asyncio.TimeoutError):  # a dead replica only delays the first report
            await asyncio.wait_for(handle.info.remote(), KICK_TIMEOUT_S)

    async def __del__(self) -> None:  # Serve awaits an async __del__ when it stops the replica
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()  # drains the queries in flight (frontend.app)

    async def check_health(self) -> None:
        """Serve's health check: raising marks this replica unhealthy (Serve then replaces it)."""
        if self._starting is not None and self._starting.done() and self._starting.exception() is not None:
            raise RuntimeError(f"frontend failed to start: {self._starting.exception()!r}")

    # -- requests -------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        """An HTTP request from Serve's proxy, answered by the frontend's own handlers."""
        await self._started()
        try:
            body = await _read_capped(request, self.cfg.max_body_bytes)
        except ServingError as exc:
            return JSONResponse(error_body(exc), status_code=exc.status)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        url = f"http://parm{_app_path(request)}" + (f"?{request.url.query}" if request.url.query else "")
        assert self._session is not None
        async with self._session.request(request.method, url, data=body, headers=headers) as reply:
            content = await reply.read()
            out = {k: v for k, v in reply.headers.items() if k.lower() not in NOT_FORWARDED}
            return Response(content, status_code=reply.status, headers=out)

    async def predict(self, inputs: np.ndarray, deadline_ms: float | None = None) -> dict[str, Any]:
        """For other deployments' handles: (N, *input_shape) float32 -> the answers, as /predict gives them."""
        await self._started()
        assert self._runner is not None
        service = self._runner.app[SERVICE]
        shape = service.input_shape()
        if shape is None:
            raise NotReady("no healthy data worker yet: the model's input shape is unknown")
        rows = validate_queries(np.asarray(inputs, np.float32), shape, self.cfg.max_queries_per_request)
        answers = await service.submit(rows, parse_deadline(deadline_ms, self.cfg.max_deadline_ms))
        return {"outputs": np.stack([a.output for a in answers]), "degraded": [a.degraded for a in answers],
                "default": [a.default for a in answers], "path": [a.path for a in answers]}


def _app_path(request: Request) -> str:
    """The path below the application's route prefix (Serve's proxy sets it as the ASGI root_path)."""
    path, root = request.url.path, request.scope.get("root_path", "").rstrip("/")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refusing (413) one over ``limit`` before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
