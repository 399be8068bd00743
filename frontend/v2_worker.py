"""A worker client for any Open Inference Protocol (KServe V2) REST server: Triton, MLServer,
KServe runtimes. Same surface as WorkerClient; one aiohttp session with a bounded pool per server.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp
import numpy as np

from frontend.config import V2_SCHEME, parse_address
from frontend.errors import ConfigError, WorkerFailed, WorkerUnavailable

log = logging.getLogger(__name__)
DEFAULT_INPUT_NAME = "input-0"
# Metadata "parameters" copied into ``info`` when a server reports them (the pool's agreement check).
INFO_PARAMETERS = ("model_id", "kind", "meta", "num_classes")
MAX_ERROR_TEXT = 500


def parse_v2_address(address: str) -> tuple[str, int, str]:
    """'v2+http://host:port/model' -> (host, port, model); ConfigError otherwise."""
    if not address.startswith(V2_SCHEME):
        raise ConfigError(f"V2 worker address {address!r} does not start with {V2_SCHEME}")
    hostport, _, model = address[len(V2_SCHEME):].partition("/")
    if not model or "/" in model:
        raise ConfigError(f"V2 worker address {address!r} is not v2+http://HOST:PORT/MODEL")
    host, port = parse_address(hostport)
    return host, port, model


def info_from_metadata(meta: Any) -> dict[str, Any]:
    """A V2 model-metadata reply -> the worker info the pool reads (name, input_shape, ...).

    The batch dimension (the first of inputs[0].shape, usually -1) is dropped."""
    if not isinstance(meta, dict):
        raise WorkerFailed(f"model metadata is not a JSON object: {str(meta)[:MAX_ERROR_TEXT]}")
    inputs = meta.get("inputs")
    first = inputs[0] if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else {}
    shape = first.get("shape")
    info: dict[str, Any] = {"name": str(meta.get("name", "")), "platform": meta.get("platform"),
                            "input_name": str(first.get("name") or DEFAULT_INPUT_NAME),
                            "outputs": meta.get("outputs") or []}
    if isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
        info["input_shape"] = shape[1:]  # without the batch dimension
    params = meta.get("parameters")
    if isinstance(params, dict):
        info.update({key: params[key] for key in INFO_PARAMETERS if key in params})
    return info


def decode_outputs(reply: Any, batch: int) -> np.ndarray:
    """outputs[0] of a V2 inference reply -> float32 (B, C); WorkerFailed when malformed."""
    try:
        out = reply["outputs"][0]
        shape = [int(d) for d in out["shape"]]
        array = np.asarray(out["data"], dtype=np.float32).reshape(shape)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise WorkerFailed(f"malformed inference reply: {exc!r}") from exc
    if array.ndim != 2 or array.shape[0] != batch:
        raise WorkerFailed(f"inference reply has shape {list(array.shape)}, expected [{batch}, C]")
    return array


class V2WorkerClient:
    """One V2 model on one server, driven like a WorkerClient (the pool cannot tell them apart)."""

    def __init__(self, address: str, role: str = "data", *, connect_timeout_s: float = 2.0,
                 health_interval_s: float = 1.0, health_timeout_s: float = 1.0,
                 request_timeout_s: float | None = None, max_connections: int = 64) -> None:
        self.address = address
        self.host, self.port, self.model = parse_v2_address(address)
        self.role = role
        self.base_url = f"http://{self.host}:{self.port}"
        self.connect_timeout_s = connect_timeout_s
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.request_timeout_s = request_timeout_s  # None: no limit; the dispatcher cancels stragglers
        self.max_connections = max_connections
        self.info: dict[str, Any] = {}        # from the model's metadata: name, input_shape, ...
        self.in_flight = 0                      # inference requests sent and not yet answered
        self.probe_ok = False                   # the last health + real-inference probe passed in time
        self.refused: str | None = None         # set by the pool when this worker must not be used
        self.answered = 0                       # HTTP replies received, and their summed round trip (metrics)
        self.latency_sum = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._connected = asyncio.Event()       # the last HTTP exchange got a response
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def name(self) -> str:
        return f"{self.role}@{self.host}:{self.port}/{self.model}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def healthy(self) -> bool:
        return self.connected and self.probe_ok and self.refused is None

    def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s, connect=self.connect_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections), timeout=timeout)
        task = asyncio.create_task(self._probe_loop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._connected.clear()
        self.probe_ok = False

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    # -- requests -------------------------------------------------------------------------

    async def infer(self, inputs: np.ndarray) -> np.ndarray:
        """inputs (B, *S) float32 -> outputs (B, C). Raises WorkerUnavailable / WorkerFailed."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        body = {"inputs": [{"name": self.info.get("input_name", DEFAULT_INPUT_NAME), "shape": list(x.shape),
                            "datatype": "FP32", "data": x.ravel().tolist()}]}
        self.in_flight += 1
        try:
            reply = await self._call("POST", f"/v2/models/{self.model}/infer", body)
        finally:
            self.in_flight -= 1
        try:
            return decode_outputs(reply, len(x))
        except WorkerFailed as exc:
            raise WorkerFailed(f"{self.name}: {exc}") from exc

    async def ping(self) -> dict[str, Any]:
        """The model's metadata as worker info."""
        try:
            return info_from_metadata(await self._call("GET", f"/v2/models/{self.model}"))
        except WorkerFailed as exc:
            raise WorkerFailed(f"{self.name}: {exc}") from exc

    async def set_fault(self, spec: str) -> None:
        raise WorkerFailed("V2 workers do not support fault injection")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One HTTP exchange -> the decoded JSON reply (None for an empty body)."""
        if self._session is None or self._closing:
            raise WorkerUnavailable(f"{self.name}: client not started or closed")
        t0 = time.perf_counter()
        try:
            async with self._session.request(method, self.base_url + path, json=body) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            self._connected.clear()
            raise WorkerUnavailable(f"{self.name}: {method} {path}: {exc!r}") from exc
        self.answered += 1
        self.latency_sum += time.perf_counter() - t0
        self._connected.set()
        return self._parse_reply(status, raw, f"{method} {path}")

    def _parse_reply(self, status: int, raw: bytes, what: str) -> Any:
        try:
            reply = json.loads(raw) if raw.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            if status < 400:
                raise WorkerFailed(f"{self.name}: {what}: malformed JSON reply: {raw[:MAX_ERROR_TEXT]!r}") from None
            reply = None
        if status >= 400:
            text = reply.get("error") if isinstance(reply, dict) else None
            text = text or raw[:MAX_ERROR_TEXT].decode("utf-8", "replace") or "no error text"
            raise WorkerFailed(f"{self.name}: {what}: HTTP {status}: {text}")
        return reply

    # -- health -----------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        """Health, metadata, then a real inference of zeros each interval; quick retries while
        the server cannot be reached (like WorkerClient's reconnect backoff)."""
        backoff = 0.05
        while not self._closing:
            self.probe_ok = await self._probe()
            if self.connected:
                backoff = 0.05
                await asyncio.sleep(self.health_interval_s)
            else:
                await asyncio.sleep(min(backoff, self.health_interval_s))
                backoff *= 2

    async def _probe(self) -> bool:
        try:
            return await asyncio.wait_for(self._probe_once(), self.health_timeout_s)
        except asyncio.TimeoutError:
            log.debug("%s: probe timed out", self.name)
        except (WorkerUnavailable, WorkerFailed) as exc:
            log.debug("%s: probe failed: %s", self.name, exc)
        return False

    async def _probe_once(self) -> bool:
        await self._call("GET", "/v2/health/ready")
        self.info = await self.ping()
        shape = self.info.get("input_shape")
        if not isinstance(shape, list):
            log.warning("%s: metadata has no usable inputs[0].shape: %s", self.name, self.info)
            return False
        await self.infer(np.zeros([1, *shape], np.float32))
        return True
