"""HTTP handlers: parse and validate requests, call the Service, format answers.

POST /predict takes JSON {"inputs": [q1, ...], "deadline_ms": optional} or the same map in
msgpack (``application/msgpack``; inputs may then also be a tensor map {dtype, shape, data}).
Each query is a nested list of the model's input shape, or flat with as many numbers.
The answer, in the request's format: {"outputs": [[...], ...], "degraded": [bool, ...],
"default": [bool, ...], "path": [str, ...]} (path: which request or decode rule produced each
answer, one of frontend.query.PATHS). Non-finite inputs are refused: a NaN inside a coded group would spread
through the parity query into the decoded answers of other clients' queries. Bodies are decoded by
frontend.bodies (orjson, msgpack within limits), so no input can make a parser recurse into a 500.
"""
from __future__ import annotations

import hmac
import math
from typing import Any

import msgpack
import numpy as np
import orjson
from aiohttp import web

from frontend.bodies import brief, describe, loads_json, loads_msgpack, parse_off_loop, tensor_map
from frontend.errors import (
    BadRequest,
    NotReady,
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    UnsupportedMediaType,
    error_body,
)
from frontend.peers import Peers, merge_metrics, merge_ready, merge_stats
from frontend.query import Answer
from frontend.service import Service
from workers.protocol import encode_tensor

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
PEERS: web.AppKey[Peers] = web.AppKey("peers", Peers)  # set when this is one of several processes on the port
JSON_TYPES = ("application/json",)
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


async def predict(request: web.Request) -> web.Response:
    raw, use_msgpack = await _read_body(request)
    body, content_type = await predict_body(request.app[SERVICE], raw, use_msgpack, request.query.get("deadline_ms"))
    return web.Response(body=body, content_type=content_type)


async def predict_body(service: Service, raw: bytes, use_msgpack: bool, query_deadline: str | None) -> tuple[bytes, str]:
    """A /predict body -> (the answer's body, its content type): the route's work past the HTTP layer,
    shared with the lean listener (frontend.predict_listener). ServingError for anything refused."""
    shape = service.input_shape()
    if shape is None:
        raise NotReady("no healthy data worker yet: the model's input shape is unknown")
    cfg = service.cfg
    inputs, deadline = await parse_off_loop(len(raw), lambda: _parse_request(
        raw, use_msgpack, shape, cfg.max_queries_per_request, query_deadline, cfg.max_deadline_ms))
    answers = await service.submit(inputs, deadline)
    return _respond(answers, use_msgpack)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    state = await readiness(request)
    return web.json_response(state, status=200 if state["ready"] else 503)


async def readiness(request: web.Request) -> dict[str, Any]:
    """This process's readiness, or, one of several processes on the port, all of theirs (frontend.peers)."""
    own = request.app[SERVICE].readiness()
    peers = _peers(request)
    if peers is None:
        return own
    return merge_ready(own, peers.index, await peers.gather("/ready"), orjson.loads)


async def stats(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    own = {**service.stats.as_dict(), "pending": service.pending, "groups_open": len(service.runs),
           **service.gc.flat()}
    peers = _peers(request)
    if peers is not None:
        replies = [(r.index, orjson.loads(r.body) if r.status == 200 else None) for r in await peers.gather("/stats")]
        own = merge_stats(own, peers.index, replies)
    return web.json_response(own)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICE].metrics.render()
    peers = _peers(request)
    if peers is not None:
        replies = await peers.gather("/metrics")
        body = merge_metrics({peers.index: body, **{r.index: r.body for r in replies if r.status == 200}})
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _peers(request: web.Request) -> Peers | None:
    """The sibling processes to answer for, unless there are none or a sibling is asking (?scope=process)."""
    peers = request.app.get(PEERS)
    return None if peers is None or request.query.get("scope") == "process" else peers


OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/v2/health/live", "/v2/health/ready"})  # probes


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """With a token configured, every route but the probes needs ``Authorization: Bearer TOKEN``."""
    token = request.app[SERVICE].cfg.auth_token
    if token is not None and request.path not in OPEN_PATHS:
        check_bearer(request.headers.get("Authorization", ""), token)
    return await handler(request)


def check_bearer(authorization: str, token: str) -> None:
    """Unauthorized unless the Authorization header is ``Bearer TOKEN`` (compared in constant time)."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("missing or wrong bearer token (Authorization: Bearer TOKEN)")


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as JSON {"error", "code"} with its status; never an HTML page."""
    try:
        return await handler(request)
    except ServingError as exc:
        status, body, headers = error_response(request.app[SERVICE], exc)
        return web.json_response(body, status=status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        request.app[SERVICE].metrics.http_errors.labels(code).inc()
        return web.json_response({"error": exc.text or exc.reason, "code": code}, status=exc.status,
                                 headers={k: v for k, v in exc.headers.items() if k == "Allow"})


def error_response(service: Service, exc: ServingError) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, JSON body, extra headers) for a refused request, counted in the metrics; both HTTP layers
    answer errors through this."""
    service.metrics.http_errors.labels(exc.code).inc()
    headers = {"Retry-After": str(math.ceil(exc.details["retry_after"]))} if "retry_after" in exc.details else None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="parm"'}
    if "allow" in exc.details:
        headers = {"Allow": str(exc.details["allow"])}
    return exc.status, error_body(exc), headers


async def _read_body(request: web.Request) -> tuple[bytes, bool]:
    """-> (the raw body, whether it is msgpack); 415 or 413 otherwise."""
    use_msgpack = body_is_msgpack(request.content_type)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large(request.app[SERVICE].cfg.max_body_bytes) from exc
    return raw, use_msgpack


def body_is_msgpack(content_type: str) -> bool:
    """Whether a body of this media type (no parameters, lower case) is msgpack; 415 unless JSON or msgpack."""
    if content_type not in JSON_TYPES + MSGPACK_TYPES:
        raise UnsupportedMediaType(f"content type {content_type!r} not supported; use application/json or "
                                   "application/msgpack")
    return content_type in MSGPACK_TYPES


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body over the limit of {limit} bytes")


def _parse_request(raw: bytes, use_msgpack: bool, shape: tuple[int, ...], max_queries: int,
                   query_deadline: str | None, max_deadline_ms: float) -> tuple[np.ndarray, float | None]:
    """A whole /predict body -> (inputs, deadline_ms). Pure (touches neither request nor service),
    so a big body can be parsed in a thread; the parsed lists are also freed there."""
    body = loads_msgpack(raw) if use_msgpack else loads_json(raw)
    if not isinstance(body, dict) or "inputs" not in body:
        raise BadRequest('body must be a map with an "inputs" field: {"inputs": [query, ...]}')
    inputs = _parse_inputs(body, shape, max_queries)
    return inputs, parse_deadline(body.get("deadline_ms", query_deadline), max_deadline_ms)


def _parse_inputs(body: dict[str, Any], shape: tuple[int, ...], max_queries: int) -> np.ndarray:
    """-> (N, *shape) float32, C-contiguous; BadRequest naming the problem otherwise."""
    raw = body["inputs"]
    try:
        arr = tensor_map(raw) if isinstance(raw, dict) else None
        if arr is None or arr.dtype != np.float32:
            with np.errstate(over="ignore", invalid="ignore"):  # huge numbers become inf, refused just below
                arr = np.asarray(raw if arr is None else arr, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f'"inputs" is not a rectangular array of numbers: {brief(exc)}') from None
    return validate_queries(arr, shape, max_queries)


def validate_queries(arr: np.ndarray, shape: tuple[int, ...], max_queries: int) -> np.ndarray:
    """(N, *shape) or (N, prod(shape)) numbers -> (N, *shape) float32, C-contiguous; BadRequest or
    PayloadTooLarge naming the problem otherwise. Shared by /predict and the V2 endpoint."""
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise BadRequest('"inputs" must be a non-empty list of queries')
    if arr.shape[0] > max_queries:
        raise PayloadTooLarge(f"{arr.shape[0]} queries in one request; the limit is {max_queries}")
    size = math.prod(shape)
    if arr.shape[1:] != shape and arr.shape[1:] != (size,):
        raise BadRequest(f"each query must have shape {list(shape)} (or {size} flat numbers), got {list(arr.shape[1:])}")
    if not np.isfinite(arr).all():
        raise BadRequest("inputs contain NaN or infinity")
    return np.ascontiguousarray(arr.reshape(arr.shape[0], *shape), dtype=np.float32)


def parse_deadline(value: Any, max_ms: float) -> float | None:
    """An optional per-request deadline in ms -> float, or BadRequest."""
    if value is None:
        return None
    if isinstance(value, bool):  # float(True) == 1.0: a JSON true must not become a 1 ms deadline
        raise BadRequest(f"deadline_ms must be a number, got {value!r}")
    try:
        ms = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past float's range
        raise BadRequest(f"deadline_ms must be a number, got {describe(value)}") from None
    if not 0 < ms <= max_ms:
        raise BadRequest(f"deadline_ms must be in (0, {max_ms:g}], got {ms:g}")
    return ms


def _respond(answers: list[Answer], use_msgpack: bool) -> tuple[bytes, str]:
    outputs = answers[0].output[None] if len(answers) == 1 else np.stack([a.output for a in answers])  # (N, C)
    degraded = [a.degraded for a in answers]
    default = [a.default for a in answers]
    path = [a.path for a in answers]
    if use_msgpack:
        body = msgpack.packb({"outputs": encode_tensor(outputs), "degraded": degraded, "default": default,
                              "path": path})
        return body, "application/msgpack"
    body = orjson.dumps({"outputs": outputs.tolist(), "degraded": degraded, "default": default, "path": path})
    return body, "application/json"  # orjson: ~10x the stdlib's json.dumps
