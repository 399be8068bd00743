"""WorkerServer end to end over real TCP: inference, batching, faults, bad input, and the CLI process."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from workers.model import LoadedModel, load_model
from workers.protocol import HEADER, FrameDecoder, decode_tensor, encode_tensor, pack
from workers.server import WorkerServer

REPO = Path(__file__).resolve().parents[2]
SHAPE = (1, 28, 28)


class Client:
    """Minimal protocol client: send requests, collect replies by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.decoder, self.next_id = reader, writer, FrameDecoder(), 0
        self.replies: dict[int, dict[str, Any]] = {}

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, type_: str, **fields: Any) -> int:
        self.next_id += 1
        self.writer.write(pack({"type": type_, "id": self.next_id, **fields}))
        return self.next_id

    async def reply(self, rid: int, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while rid not in self.replies:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by server")
                for msg in self.decoder.feed(data):
                    self.replies[msg["id"]] = msg
        return self.replies.pop(rid)

    async def call(self, type_: str, **fields: Any) -> dict[str, Any]:
        return await self.reply(self.send(type_, **fields))

    async def infer(self, x: np.ndarray) -> dict[str, Any]:
        return await self.call("infer", inputs=encode_tensor(x))

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def _server(model_spec: str, **kwargs: Any) -> WorkerServer:
    server = WorkerServer(load_model(model_spec, "cpu"), "127.0.0.1", 0, **kwargs)
    await server.start()
    return server


@pytest.fixture
async def server() -> AsyncIterator[WorkerServer]:
    srv = await _server("builtin:linear", max_batch=8)
    yield srv
    await srv.close()


@pytest.fixture
async def client(server: WorkerServer) -> AsyncIterator[Client]:
    c = await Client.connect(server.port)
    yield c
    await c.close()


def _reference_linear(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """F(x) computed independently of workers.model: same seed, a plain nn.Linear."""
    torch.manual_seed(seed)
    fc = torch.nn.Linear(int(np.prod(SHAPE)), 10)
    with torch.no_grad():
        return fc(torch.from_numpy(x).flatten(1)).numpy()


def _inputs(b: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((b, *SHAPE), dtype=np.float32)


async def test_infer_matches_independent_linear(client: Client) -> None:
    x = _inputs(3)
    reply = await client.infer(x)
    assert reply["type"] == "result"
    out = decode_tensor(reply["outputs"])
    assert out.shape == (3, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference_linear(x), rtol=1e-5, atol=1e-5)


async def test_parity_builtin_decodes_sum_code() -> None:
    base, parity = await _server("builtin:linear"), await _server("builtin:linear:parity_k=2")
    try:
        cb, cp = await Client.connect(base.port), await Client.connect(parity.port)
        x1, x2 = _inputs(1, 1), _inputs(1, 2)
        f1, f2 = [decode_tensor((await cb.infer(x))["outputs"]) for x in (x1, x2)]
        fp = decode_tensor((await cp.infer(x1 + x2))["outputs"])
        np.testing.assert_allclose(fp, f1 + f2, rtol=1e-4, atol=1e-4)
        info = (await cp.call("ping"))["info"]
        assert info["kind"] == "parity" and info["meta"]["k"] == 2
        assert info["meta"]["base_id"] == (await cb.call("ping"))["info"]["model_id"]
        await cb.close()
        await cp.close()
    finally:
        await base.close()
        await parity.close()


async def test_ping_info(client: Client, server: WorkerServer) -> None:
    reply = await client.call("ping")
    assert reply["type"] == "pong"
    info = reply["info"]
    assert info["input_shape"] == list(SHAPE) and info["num_classes"] == 10 and info["kind"] == "base"
    assert info["fault"] == "none" and info["max_batch"] == 8 and info["pid"] == os.getpid()
    assert info["in_flight"] == 0 and isinstance(info["model_id"], str)


async def test_concurrent_requests_are_batched() -> None:
    srv = await _server("builtin:sleep:ms=50", max_batch=8)
    try:
        c = await Client.connect(srv.port)
        xs = [_inputs(1 + i % 3, i) for i in range(8)]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ids = [c.send("infer", inputs=encode_tensor(x)) for x in xs]
        replies = [await c.reply(i) for i in ids]
        elapsed = loop.time() - t0
        assert elapsed < 4 * 0.050, f"8 requests took {elapsed:.3f}s: not batched"
        for x, r in zip(xs, replies):  # each request gets back exactly its own rows
            np.testing.assert_allclose(decode_tensor(r["outputs"]), _reference_linear(x), rtol=1e-5, atol=1e-5)
        info = (await c.call("ping"))["info"]
        assert info["requests_served"] == 8 and info["batches_run"] <= 3
        await c.close()
    finally:
        await srv.close()


async def test_requests_of_a_closed_connection_are_not_run() -> None:
    srv = await _server("builtin:sleep:ms=50", max_batch=1)
    try:
        gone = await Client.connect(srv.port)
        for i in range(4):  # the first runs (50 ms) while the other three queue behind it
            gone.send("infer", inputs=encode_tensor(_inputs(1, i)))
        await asyncio.sleep(0.02)
        await gone.close()
        await asyncio.sleep(0.1)  # the first batch ends; the queued three belong to a closed connection
        c = await Client.connect(srv.port)
        info = (await c.call("ping"))["info"]
        assert info["batches_run"] == 1 and info["in_flight"] == 0, info
        assert (await c.infer(_inputs(1)))["type"] == "result"  # and the worker serves on
        await c.close()
    finally:
        await srv.close()


async def test_max_batch_one_runs_each_request_alone() -> None:
    srv = await _server("builtin:linear", max_batch=1)
    try:
        c = await Client.connect(srv.port)
        ids = [c.send("infer", inputs=encode_tensor(_inputs(2, i))) for i in range(4)]
        for i in ids:
            assert (await c.reply(i))["type"] == "result"
        assert (await c.call("ping"))["info"]["batches_run"] == 4
        await c.close()
    finally:
        await srv.close()


@pytest.mark.parametrize("bad", [
    np.zeros((2, 1, 28, 27), np.float32),
    np.zeros((1, 28, 28), np.float32),        # missing batch dim
    np.zeros((0, 1, 28, 28), np.float32),     # empty batch
    np.zeros((2, 1, 28, 28), np.float64),
])
async def test_bad_inputs_get_error_and_connection_survives(client: Client, bad: np.ndarray) -> None:
    reply = await client.infer(bad)
    assert reply["type"] == "error" and reply["message"]
    assert (await client.infer(_inputs(1)))["type"] == "result"


async def test_malformed_tensor_and_unknown_type_get_error(client: Client) -> None:
    r = await client.call("infer", inputs={"dtype": "float32", "shape": [1, 1, 28, 28], "data": b"short"})
    assert r["type"] == "error"
    r = await client.call("infer")
    assert r["type"] == "error"
    r = await client.call("transmogrify")
    assert r["type"] == "error" and "transmogrify" in r["message"]
    assert (await client.call("ping"))["type"] == "pong"


@pytest.mark.parametrize("garbage", [
    HEADER.pack(2 ** 31) + b"x",               # header over max_frame
    HEADER.pack(3) + b"\xc1\xc1\xc1",          # undecodable payload
    pack({"type": "ping"}),                    # no id
])
async def test_garbage_closes_only_that_connection(server: WorkerServer, garbage: bytes) -> None:
    bad, good = await Client.connect(server.port), await Client.connect(server.port)
    bad.writer.write(garbage)
    assert await bad.closed_by_server()
    assert (await good.infer(_inputs(1)))["type"] == "result"
    await bad.close()
    await good.close()


async def test_a_fault_applies_to_the_requests_sent_after_it_on_the_connection(client: Client) -> None:
    fault = client.send("fault", spec="error:p=1")
    infer = client.send("infer", inputs=encode_tensor(_inputs(1)))  # same write: no reply awaited between
    assert (await client.reply(fault))["type"] == "ok"
    assert (await client.reply(infer))["type"] == "error"
    assert (await client.call("fault", spec="none"))["type"] == "ok"
    assert (await client.infer(_inputs(1)))["type"] == "result"


async def test_stall_then_none_releases(client: Client, server: WorkerServer) -> None:
    assert (await client.call("fault", spec="stall"))["fault"] == "stall"
    rid = client.send("infer", inputs=encode_tensor(_inputs(1)))
    with pytest.raises(TimeoutError):
        await client.reply(rid, timeout=0.1)
    control = await Client.connect(server.port)  # a second connection heals the worker
    assert (await control.call("ping"))["info"]["in_flight"] == 1
    assert (await control.call("fault", spec="none"))["type"] == "ok"
    assert (await client.reply(rid))["type"] == "result"
    await control.close()


async def test_error_fault_and_bad_spec(client: Client) -> None:
    assert (await client.call("fault", spec="error"))["type"] == "ok"
    r = await client.infer(_inputs(1))
    assert r["type"] == "error" and "fault" in r["message"]
    r = await client.call("fault", spec="error:p=7")
    assert r["type"] == "error" and "p=7" in r["message"]
    assert (await client.call("ping"))["info"]["fault"] == "error"
    assert (await client.call("fault", spec=3))["type"] == "error"
    await client.call("fault", spec="none")
    assert (await client.infer(_inputs(1)))["type"] == "result"


async def test_drop_fault_closes_connection(client: Client, server: WorkerServer) -> None:
    await client.call("fault", spec="drop")
    client.send("infer", inputs=encode_tensor(_inputs(1)))
    assert await client.closed_by_server()
    other = await Client.connect(server.port)
    assert (await other.call("ping"))["info"]["fault"] == "drop"
    await other.close()


async def test_close_with_stalled_requests_is_clean() -> None:
    srv = await _server("builtin:linear", fault_spec="stall")
    c = await Client.connect(srv.port)
    c.send("infer", inputs=encode_tensor(_inputs(1)))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.close(), timeout=2)
    assert await c.closed_by_server()
    await c.close()


@pytest.mark.parametrize("fails", ["raises", "complex output"])
async def test_a_model_that_fails_gets_an_error_reply_not_silence(fails: str) -> None:
    def predict(x: np.ndarray) -> np.ndarray:
        if fails == "raises":
            raise RuntimeError("model exploded")
        return np.zeros((len(x), 2), np.complex64)  # a dtype the wire does not carry
    srv = WorkerServer(LoadedModel(predict, (3,), 2, {"name": "broken"}), "127.0.0.1", 0)
    await srv.start()
    try:
        c = await Client.connect(srv.port)
        for _ in range(2):  # and again: the connection and the worker carry on after a failure
            reply = await c.infer(np.zeros((1, 3), np.float32))
            assert reply["type"] == "error" and ("model exploded" in reply["message"] or "complex" in reply["message"])
        assert (await c.call("ping"))["info"]["in_flight"] == 0
        await c.close()
    finally:
        await srv.close()


async def test_serves_a_checkpoint(tmp_path: Path) -> None:
    from parity_models.checkpoint import make_checkpoint, save
    from parity_models.models import MLP

    torch.manual_seed(5)
    module = MLP((1, 4, 4), 3, hidden=(8,)).eval()
    args = {"input_shape": [1, 4, 4], "num_classes": 3, "hidden": [8]}
    save(make_checkpoint(module, kind="base", arch="mlp", arch_args=args, input_shape=[1, 4, 4], num_classes=3,
                         meta={"dataset": "toy", "acc": torch.tensor(0.5)}), tmp_path / "m.pt")
    srv = WorkerServer(load_model(str(tmp_path / "m.pt"), "auto"), max_batch=4)
    await srv.start()
    try:
        c = await Client.connect(srv.port)
        x = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(decode_tensor((await c.infer(x))["outputs"]), want, rtol=1e-5, atol=1e-6)
        info = (await c.call("ping"))["info"]
        assert info["meta"] == {"dataset": "toy", "acc": 0.5} and info["name"] == "m"
        await c.close()
    finally:
        await srv.close()


@pytest.mark.parametrize("spec,match", [
    ("builtin:resnet", "builtin:linear"), ("builtin:linear:ms=5", "sleep_ms"), ("builtin:sleep:ms=-1", ">="),
    ("builtin:linear:parity_k=0", ">="), ("builtin:linear:seed=x", "int"), ("/nonexistent.pt", "does not exist"),
    ("builtin:linear:parity_index=1", "needs parity_k"), ("builtin:linear:parity_k=2,parity_index=-1", ">="),
])
def test_bad_model_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_model(spec, "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            load_model("builtin:linear", "cuda")


def test_register_adds_worker_subcommand() -> None:
    import parm.cli
    import workers.cli

    parser = parm.cli.build_parser((workers.cli,))
    args = parser.parse_args(["worker", "--model", "builtin:linear", "--port", "0", "--max-batch", "4"])
    assert args.func.__name__ == "run_worker" and args.max_batch == 4 and args.host == "127.0.0.1"
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--model", "builtin:linear", "--port", "0", "--max-batch", "0"])


# -- the real process ----------------------------------------------------------------------------
async def _spawn(*flags: str) -> tuple[asyncio.subprocess.Process, int]:
    code = "import sys; from workers.cli import main_worker; sys.exit(main_worker(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--model", "builtin:linear", "--port", "0", *flags,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
    match = re.fullmatch(r"parm worker listening on (\S+):(\d+) \(model (.+), pid (\d+)\)\n", line)
    assert match, f"unexpected readiness line {line!r}"
    assert int(match[4]) == proc.pid
    return proc, int(match[2])


async def test_cli_process_serves_and_exits_on_sigterm() -> None:
    proc, port = await _spawn("--max-batch", "4")
    try:
        c = await Client.connect(port)
        info = (await c.call("ping"))["info"]
        assert info["pid"] == proc.pid and info["max_batch"] == 4
        np.testing.assert_allclose(decode_tensor((await c.infer(_inputs(2)))["outputs"]),
                                   _reference_linear(_inputs(2)), rtol=1e-5, atol=1e-5)
        await c.call("fault", spec="stall")  # a request still hanging must not block shutdown
        c.send("infer", inputs=encode_tensor(_inputs(1)))
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=5) == 0
        assert await c.closed_by_server()
        await c.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_crash_fault_exits_process() -> None:
    proc, port = await _spawn("--fault", "crash:after=1")
    try:
        c = await Client.connect(port)
        assert (await c.infer(_inputs(1)))["type"] == "result"  # after=1: one request served
        c.send("infer", inputs=encode_tensor(_inputs(1)))
        assert await c.closed_by_server()
        assert await asyncio.wait_for(proc.wait(), timeout=5) == 1
        await c.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
