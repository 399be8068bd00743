"""``--trace-file`` on real sockets: every query's events are written at shutdown (joined, sent to a
worker, answered and which way, the parity query's round trip), and the tail analysis names a
stalled worker as the cause of the slowest answers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frontend.config import FrontendConfig
from frontend.errors import ConfigError
from frontend.trace import label, read
from harness import trace_tail
from tests.conftest import eventually, frontend, service_of, worker_servers

PARITY = "builtin:linear:parity_k=2"
GROUPS = 30


def coded(ws, trace_file: Path) -> FrontendConfig:
    return FrontendConfig(data=tuple(("127.0.0.1", w.port) for w in ws[:2]),
                          parity=(("127.0.0.1", ws[2].port),), k=2, code="sum", trace_file=str(trace_file))


async def test_the_trace_holds_every_query_and_names_the_stalled_worker(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    async with worker_servers(["builtin:linear"] * 2 + [PARITY], fault_spec="delay:ms=2,dist=uniform") as ws:
        async with frontend(coded(ws, path)) as c:
            service = service_of(c)
            await eventually(lambda: all(w.healthy for w in service.pool.parity))
            stalled = label(service.pool.data[1])
            rng = np.random.default_rng(0)
            degraded = 0
            for i in range(GROUPS):
                if i == GROUPS - 5:
                    ws[1].faults.set("delay:ms=150")  # the last 5 groups: data worker 1 is slow
                resp = await c.post("/predict", json={"inputs": rng.random((2, 1, 28, 28), dtype=np.float32).tolist()})
                assert resp.status == 200
                degraded += sum((await resp.json())["degraded"])
            ws[1].faults.set("none")
    header, groups = read(path)
    groups = list(groups)
    assert header["groups"] == len(groups) == GROUPS and header["dropped"] == 0
    records = [trace_tail.parse_group(g) for g in groups]
    queries = [q for g in records for q in g.queries]
    assert len(queries) == 2 * GROUPS
    assert all(q.answered is not None and q.sends and q.answered >= q.joined for q in queries)
    assert all(g.coded and g.parity_sends for g in records)  # a parity output may be cancelled: both data came in
    assert any(g.parity_outs for g in records)
    assert sum(q.path.startswith("decoded") for q in queries) == degraded > 0
    # the slowest answers: the queries sent to the slowed worker, while it was slow
    slow_since = records[GROUPS - 5].queries[0].joined - 0.01

    def faulted(worker: str, t: float) -> bool:
        return worker == stalled and t >= slow_since
    causes = trace_tail.tail_causes(records, faulted, tails=(95.0,))["p95"]["causes"]
    assert sum(n for c, n in causes.items() if c.startswith("slowed worker")) >= sum(causes.values()) / 2, causes


def test_a_trace_file_in_a_missing_folder_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder does not exist"):
        FrontendConfig(data=(("127.0.0.1", 1),), parity=(("127.0.0.1", 2),), trace_file=str(tmp_path / "no" / "t.jsonl"))
