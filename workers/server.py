"""Worker process: an asyncio TCP server answering infer/ping/fault frames for one model.

Data flow: frontend -> worker_client -> [wire] -> **workers.server** -> model (workers.model).
Requests on a connection (workers.connection) are multiplexed by ``id``; infer requests go to the
dynamic batcher (workers.batcher), which runs queued inputs together, one batch at a time; under a
fault spec each first passes fault injection (workers.faults) in a task of its own.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import numpy as np

from workers import auth
from workers.batcher import Batcher
from workers.connection import Connection
from workers.faults import FaultInjector, InjectedDrop, InjectedError
from workers.model import LoadedModel
from workers.protocol import (
    DEFAULT_MAX_FRAME,
    REQUEST_TYPES,
    FrameDecoder,
    ProtocolError,
    decode_tensor,
    encode_tensor,
)

log = logging.getLogger(__name__)
READ_CHUNK = 256 * 1024


class WorkerServer:
    """Serves ``model`` on host:port; ``start()``, then ``close()`` when done."""

    def __init__(self, model: LoadedModel, host: str = "127.0.0.1", port: int = 0, max_batch: int = 32,
                 fault_spec: str = "none", max_frame: int = DEFAULT_MAX_FRAME,
                 faults: FaultInjector | None = None, secret: str | None = None) -> None:
        self.model, self.host, self.max_batch, self.max_frame = model, host, max_batch, max_frame
        # An injected FaultInjector (e.g. with a seeded RNG) wins over fault_spec.
        self.faults = faults if faults is not None else FaultInjector(fault_spec)
        self.batcher = Batcher(model, max_batch, lambda: self.faults.slow_factor)
        self.secret = secret  # set: every connection must pass the shared-secret handshake (workers.auth)
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[Any], Connection] = {}  # serving task -> its open connection
        self.in_flight = 0
        self.requests_served = 0

    # batch counters live in the batcher; read through here by info() and workers.metrics
    batches_run = property(lambda self: self.batcher.batches_run)
    rows_run = property(lambda self: self.batcher.rows_run)
    inference_seconds = property(lambda self: self.batcher.inference_seconds)

    async def start(self) -> None:
        self.batcher.start()
        self._server = await asyncio.start_server(self._serve_connection, self.host, self._requested_port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Abort rather than cancel: asyncio logs cancelled client_connected_cb tasks as errors.
        # Each serving task then sees EOF and its finally cancels that connection's handlers.
        for conn in self._conns.values():
            conn.abort()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self.batcher.close()
        if self._server is not None:
            await self._server.wait_closed()

    def info(self) -> dict[str, Any]:
        return {**self.model.info, "fault": self.faults.spec, "in_flight": self.in_flight, "max_batch": self.max_batch,
                "pid": os.getpid(), "requests_served": self.requests_served, "batches_run": self.batches_run}

    # -- connections ---------------------------------------------------------------------------
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        me = asyncio.current_task()
        assert me is not None  # start_server runs this callback in a task
        self._conns[me] = conn
        decoder = FrameDecoder(self.max_frame)
        peer = writer.get_extra_info("peername")
        try:
            early = await auth.accept(reader, writer, decoder, self.secret) if self.secret else []
            for message in early:
                self._on_message(message, conn)
            while data := await reader.read(READ_CHUNK):
                for message in decoder.feed(data):
                    self._on_message(message, conn)
                await conn.drain()  # a client that does not read its replies stops being read
        except auth.AuthError as exc:
            log.warning("refusing connection from %s: %s", peer, exc)
        except ProtocolError as exc:
            log.warning("closing connection from %s: %s", peer, exc)
        except ConnectionError as exc:
            log.info("connection from %s lost: %s", peer, exc)
        finally:
            await conn.close()
            self._conns.pop(me, None)

    def _on_message(self, message: dict[str, Any], conn: Connection) -> None:
        """An infer request with no fault to inject goes straight to the batcher (no task, no future);
        anything else (ping, fault, infer under a fault spec) gets a handler task, and so does an infer
        request behind a ping or fault message still pending on its connection: handlers run in order,
        so a fault set by an earlier message of the connection applies to it."""
        if message["type"] == "infer" and not self.faults.active and not conn.control:
            self._infer_now(message, conn)
        else:
            self._spawn_handler(message, conn)

    def _spawn_handler(self, message: dict[str, Any], conn: Connection) -> None:
        task = asyncio.create_task(self._handle(message, conn))
        conn.tasks.add(task)  # strong reference until done
        task.add_done_callback(conn.tasks.discard)
        if message["type"] != "infer":
            conn.control.add(task)
            task.add_done_callback(conn.control.discard)

    async def _handle(self, message: dict[str, Any], conn: Connection) -> None:
        try:
            reply = await self._dispatch(message)
        except InjectedDrop:
            log.info("fault injection: dropping connection (request %s)", message["id"])
            conn.abort()
            return
        try:
            await conn.send(reply, self.max_frame)
        except (ConnectionError, OSError):
            conn.abort()  # peer gone; the read loop sees EOF and cleans up

    async def _dispatch(self, message: dict[str, Any]) -> dict[str, Any]:
        kind, rid = message["type"], message["id"]
        try:
            if kind == "infer":
                return await self._infer(message)
            if kind == "ping":
                return {"type": "pong", "id": rid, "info": self.info()}
            if kind == "fault":
                return self._set_fault(message)
            raise ValueError(f"unknown message type {kind!r}; expected one of {', '.join(sorted(REQUEST_TYPES))}")
        except (ValueError, InjectedError) as exc:  # ProtocolError is a ValueError
            return {"type": "error", "id": rid, "message": str(exc)}
        except InjectedDrop:
            raise  # handled by _handle: closes the connection
        except Exception as exc:  # a bug must cost one reply, not the connection or the worker
            log.exception("unexpected failure handling %s request %s", kind, rid)
            return {"type": "error", "id": rid, "message": f"internal error: {type(exc).__name__}: {exc}"}

    def _set_fault(self, message: dict[str, Any]) -> dict[str, Any]:
        spec = message.get("spec")
        if not isinstance(spec, str):
            raise ValueError("fault message needs a string 'spec'")
        self.faults.set(spec)
        log.info("fault spec set to %r", self.faults.spec)
        return {"type": "ok", "id": message["id"], "fault": self.faults.spec}

    # -- inference -----------------------------------------------------------------------------
    def _infer_now(self, message: dict[str, Any], conn: Connection) -> None:
        rid = message["id"]
        try:
            inputs = self._validate(decode_tensor(message.get("inputs")))
        except ValueError as exc:  # ProtocolError is a ValueError
            conn.queue({"type": "error", "id": rid, "message": str(exc)}, self.max_frame)
            return
        self.in_flight += 1

        def done(outputs: np.ndarray | None, exc: BaseException | None) -> None:
            self.in_flight -= 1
            reply = self._reply(rid, outputs, exc)
            if reply is not None:
                conn.queue(reply, self.max_frame)
        self.batcher.submit_nowait(inputs, done, conn.open)

    def _reply(self, rid: Any, outputs: np.ndarray | None, exc: BaseException | None) -> dict[str, Any] | None:
        """The reply to a request the batcher answered; None when nobody is left to tell (cancelled:
        its connection closed, or the worker is shutting down)."""
        if outputs is not None:
            try:
                encoded = encode_tensor(outputs)
            except ValueError as err:  # e.g. a model output dtype the wire does not carry
                return {"type": "error", "id": rid, "message": str(err)}
            self.requests_served += 1
            return {"type": "result", "id": rid, "outputs": encoded}
        if isinstance(exc, asyncio.CancelledError):
            return None
        if isinstance(exc, ValueError):  # the model failed on the batch
            return {"type": "error", "id": rid, "message": str(exc)}
        return {"type": "error", "id": rid, "message": f"internal error: {type(exc).__name__}: {exc}"}

    async def _infer(self, message: dict[str, Any]) -> dict[str, Any]:
        inputs = self._validate(decode_tensor(message.get("inputs")))
        self.in_flight += 1
        try:
            await self.faults.before_request()
            outputs = await self.batcher.submit(inputs)
        finally:
            self.in_flight -= 1
        self.requests_served += 1
        return {"type": "result", "id": message["id"], "outputs": encode_tensor(outputs)}

    def _validate(self, inputs: np.ndarray) -> np.ndarray:
        return check_inputs(inputs, tuple(self.model.input_shape))


def check_inputs(inputs: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
    """Inputs must be float32 (B, *expected) with B >= 1; ValueError otherwise."""
    if inputs.dtype != np.float32:
        raise ValueError(f"inputs must be float32, got {inputs.dtype.name}")
    if inputs.ndim != len(expected) + 1 or tuple(inputs.shape[1:]) != expected or inputs.shape[0] < 1:
        raise ValueError(f"inputs shape {list(inputs.shape)} does not match (B>=1, *{list(expected)})")
    return inputs


async def serve_forever(model: LoadedModel, host: str = "127.0.0.1", port: int = 0, max_batch: int = 32,
                        fault_spec: str = "none", max_frame: int = DEFAULT_MAX_FRAME, secret: str | None = None,
                        metrics_port: int | None = None) -> int:
    """Run until SIGTERM/SIGINT; prints the readiness line to stdout once listening."""
    server = WorkerServer(model, host, port, max_batch, fault_spec, max_frame, secret=secret)
    await server.start()
    if metrics_port is not None:
        from workers.metrics import start_metrics_server

        start_metrics_server(server, host, metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"parm worker listening on {host}:{server.port} (model {model.info.get('name')}, pid {os.getpid()})",
          flush=True)
    try:
        await stop.wait()
        log.info("signal received; shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.close()
    return 0


if __name__ == "__main__":
    from workers.cli import main_worker

    sys.exit(main_worker())
