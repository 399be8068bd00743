"""The aiohttp application factory: routes, error middleware, and the Service's lifecycle.

``create_app(cfg)`` is what ``parm serve``, ``parm up`` and the tests run. Startup connects to the
workers; cleanup stops accepting, drains in-flight queries, then closes worker connections.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from frontend import handlers, v2
from frontend.config import FrontendConfig
from frontend.peers import Peers
from frontend.pool import WorkerPool
from frontend.service import Service


def create_app(cfg: FrontendConfig, drain_timeout_s: float = 5.0, peers: Peers | None = None,
               pool: WorkerPool | None = None) -> web.Application:
    """``peers``: this is one of several processes on the port, answering probes for all (frontend.peers).
    ``pool``: workers to use instead of clients for cfg's addresses (Ray Serve replicas, rayserve)."""
    # the bearer-token check only where a token is set: each middleware is a coroutine layer per request
    middlewares = [handlers.errors_middleware] + ([handlers.auth_middleware] if cfg.auth_token is not None else [])
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=middlewares)
    app[handlers.SERVICE] = Service(cfg, pool)
    if peers is not None:
        app[handlers.PEERS] = peers

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        service = app[handlers.SERVICE]
        await service.start()
        yield
        await service.stop(drain_timeout_s)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/predict", handlers.predict)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ready", handlers.ready)
    app.router.add_get("/stats", handlers.stats)
    app.router.add_get("/metrics", handlers.metrics)
    v2.add_routes(app)
    return app
