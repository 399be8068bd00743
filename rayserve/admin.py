"""The ingress's Ray-specific route, beside the frontend's own: which replica (unique id and
rank) each worker slot stands for, and its health (GET /ray/replicas; the bearer token applies).
Faults are not set here but on the application's fault board (rayserve.faults)."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from frontend.handlers import SERVICE
from frontend.worker_api import Worker


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ray/replicas", replicas)


async def replicas(request: web.Request) -> web.Response:
    """{"data": [slot...], "parity": [slot...]}, each {"slot", "replica", "rank", "healthy", "in_flight"}."""
    pool = request.app[SERVICE].pool
    return web.json_response({"data": [_slot(w) for w in pool.data], "parity": [_slot(w) for w in pool.parity]})


def _slot(w: Worker) -> dict[str, Any]:
    rank = None if w.info_stale else w.info.get("rank")
    return {"slot": w.port, "replica": getattr(w, "replica", None), "rank": rank, "healthy": w.healthy,
            "in_flight": w.in_flight}
