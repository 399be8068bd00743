"""A worker client for any Open Inference Protocol (KServe V2) REST server: Triton, MLServer,
KServe runtimes. Same surface and health rules as WorkerClient (both are WorkerBase); one aiohttp
session with a bounded pool per server.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import numpy as np

from frontend import clock
from frontend.config import parse_v2_address
from frontend.errors import WorkerFailed, WorkerUnavailable
from frontend.worker_base import WorkerBase

log = logging.getLogger(__name__)
DEFAULT_INPUT_NAME = "input-0"
# Metadata "parameters" copied into ``info`` when a server reports them (the pool's agreement check).
INFO_PARAMETERS = ("model_id", "kind", "meta", "num_classes")
MAX_ERROR_TEXT = 500


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


class V2WorkerClient(WorkerBase):
    """One V2 model on one server, driven like a WorkerClient (the pool cannot tell them apart)."""

    def __init__(self, address: str, role: str = "data", *, connect_timeout_s: float = 2.0,
                 health_interval_s: float = 1.0, health_timeout_s: float = 1.0,
                 request_timeout_s: float | None = None, max_connections: int = 64) -> None:
        super().__init__(role, connect_timeout_s=connect_timeout_s, health_interval_s=health_interval_s,
                         health_timeout_s=health_timeout_s)
        self.address = address
        self.host, self.port, self.model = parse_v2_address(address)
        self.base_url = f"http://{self.host}:{self.port}"
        self.request_timeout_s = request_timeout_s  # None: no limit; the dispatcher cancels stragglers
        self.max_connections = max_connections
        # one pool of connections to the server; "connected" means the last HTTP exchange got a response
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return f"{self.role}@{self.host}:{self.port}/{self.model}"

    def _start_transport(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s, connect=self.connect_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections), timeout=timeout)

    async def _close_transport(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._mark_disconnected()

    # -- requests -------------------------------------------------------------------------

    async def infer(self, inputs: np.ndarray) -> np.ndarray:
        """inputs (B, *S) float32 -> outputs (B, C). Raises WorkerUnavailable / WorkerFailed."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        body = {"inputs": [{"name": self.info.get("input_name", DEFAULT_INPUT_NAME), "shape": list(x.shape),
                            "datatype": "FP32", "data": x.ravel().tolist()}]}
        # an HTTP request ends with its caller; the server would go on with it unseen: run it to its reply
        reply = await self._until_answered(self._call("POST", f"/v2/models/{self.model}/infer", body))
        try:
            outputs = decode_outputs(reply, len(x))
        except WorkerFailed as exc:
            raise WorkerFailed(f"{self.name}: {exc}") from exc
        self._record_result()
        return outputs

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
        t0 = clock.now()
        try:
            async with self._session.request(method, self.base_url + path, json=body) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            self._mark_disconnected()
            raise WorkerUnavailable(f"{self.name}: {method} {path}: {exc!r}") from exc
        self._record_reply(t0, inference=path.endswith("/infer"))
        self._mark_connected()
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

    async def _probe_once(self) -> bool:
        """Health, metadata, then a real inference of zeros."""
        await self._call("GET", "/v2/health/ready")
        self._set_info(await self.ping())
        shape = self.info.get("input_shape")
        if not isinstance(shape, list):
            log.warning("%s: metadata has no usable inputs[0].shape: %s", self.name, self.info)
            return False
        await self.infer(np.zeros([1, *shape], np.float32))
        return True
