"""``parm bench`` end to end on a tiny pool (2 data workers, k=2): no query is lost under any fault
kind, degraded answers only while a data worker is faulted, hedging answers each query once, and
the JSON and PNG are written. Real processes; one worker pool shared by the module (a torch
process takes seconds to start on a loaded 2-core machine)."""
from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from harness.bench import BenchConfig, ModeRun, Pool, prepare_queries, run_bench, run_mode, worker_pool
from harness.plan import parse_plan
from parm import bench_command

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
RATE, DURATION = 60.0, 1.5
KIND_PLANS: dict[str, dict[str, Any]] = {
    "delay": {"kind": "delay", "workers": "all", "p": 0.2, "dist": "exp", "mean_ms": 30},
    "contention": {"kind": "contention", "workers": "all", "rate_per_s": 2, "factor": 5, "duration_ms": 300},
    "stall": {"kind": "stall", "worker": 0, "at_s": 0.3, "duration_ms": 800},
    "crash": {"kind": "crash", "worker": 1, "at_s": 0.3, "restart_after_s": 0.5},
    "drop": {"kind": "drop", "worker": 0, "at_s": 0.3, "duration_ms": 300},
}


ALL_KINDS = {"seed": 5, "faults": [
    KIND_PLANS["delay"], KIND_PLANS["contention"],
    {"kind": "stall", "worker": 0, "at_s": 0.2, "duration_ms": 400},
    {"kind": "drop", "worker": 1, "at_s": 0.7, "duration_ms": 200},
    # after the dropped worker's next health probe: with N=2, two data workers out at once would
    # leave no healthy data worker, a 503 that no mode can avoid
    {"kind": "crash", "worker": 0, "at_s": 2.0, "restart_after_s": 0.2}]}


def config(**kw: Any) -> BenchConfig:
    base = dict(n_data=2, k=2, service_time="fixed:ms=5", rates=(RATE,), duration_s=DURATION, progress=False,
                deadline_ms=5000.0)
    return BenchConfig(**{**base, **kw})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Pool, Path, Path]]:
    tmp = tmp_path_factory.mktemp("bench")
    queries = tmp / "queries.npz"
    cfg = config()
    # The dataset load and the worker start-up are both slow: overlap them.
    prepared = asyncio.create_task(asyncio.to_thread(prepare_queries, cfg, queries))
    async with worker_pool(cfg) as pool:
        await prepared
        yield pool, queries, tmp


async def run(env: tuple[Pool, Path, Path], mode: str, faults: list[dict[str, Any]], **kw: Any) -> ModeRun:
    pool, queries, tmp = env
    cfg = config(plan=parse_plan({"seed": 3, "faults": faults}), **kw)
    return await run_mode(cfg, mode, RATE, pool, queries, tmp)


async def test_degraded_answers_only_while_a_data_worker_is_stalled(env: tuple[Pool, Path, Path]) -> None:
    # A decode grace longer than the service-time jitter: without it, ParM decodes whenever the
    # parity output races ahead of a healthy data output, which is correct but not a fault.
    r = await run(env, "coded", [KIND_PLANS["stall"]], decode_grace_ms=25.0, trace_dir=str(env[2] / "traces"))
    s, rec = r.summary, r.records
    # --trace: the frontend's trace covers every answered query, and the plan's stall is named in the tail
    causes = s["tail_causes"]
    assert causes["queries"] == s["answered"] and causes["p99"]["queries"] >= 1, causes
    assert any(c.startswith("slowed worker") for c in causes["p99"]["causes"]), causes
    assert s["lost"] == 0 and s["failed"] == 0 and s["answered"] == s["count"] > 50
    degraded_at = rec["sched_s"][rec["degraded"]]
    assert len(degraded_at) > 0
    # The stall window is [0.3, 1.1) s; when it lifts, the worker first serves the backlog that
    # queued while it hung (recovery). Outside that, no query met a faulted worker: none is degraded.
    assert degraded_at.min() >= 0.3 - 0.05 and degraded_at.max() < 1.1 + 0.3, degraded_at
    assert s["accuracy"] == pytest.approx(np.mean(rec["pred"] == rec["label"]))


async def test_every_fault_kind_loses_nothing_hedging_answers_once_and_files_are_written(
        env: tuple[Pool, Path, Path], tmp_path: Path) -> None:
    """One plan with all five kinds (delay and contention throughout; stall, drop, crash with a
    restart on the same port at separate times), through the CLI's own parser, coded and hedged."""
    pool, queries, _ = env
    parser = argparse.ArgumentParser(prog="parm")
    bench_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "--modes", "hedged,coded", "--workers", "2", "--rate", f"{RATE:g}",
                              "--duration", "2.8", "--service-time", "fixed:ms=5", "--plan", json.dumps(ALL_KINDS),
                              "--hedge-delay-ms", "15", "--no-progress"])
    rep, runs = await run_bench(bench_command.build_config(args), pool, queries)
    for mode, s in rep["runs"][0]["modes"].items():
        assert s["lost"] == 0 and s["failed"] == 0, (mode, s)
        assert s["faults_replayed"]["failed"] == [], (mode, s["faults_replayed"])
        kills = sum(1 for e in s["faults_replayed"]["events"] if e["action"] in ("kill", "restart"))
        assert kills == 2
    hedged = rep["runs"][0]["modes"]["hedged"]
    fe = hedged["frontend_stats"]
    assert fe["hedges"] > 0 and hedged["hedges"] == fe["hedges"]
    assert fe["answered"] == fe["queries"] == hedged["answered"] == hedged["count"]  # one answer per query
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    bench_command.write_outputs(rep, runs, str(out_json), str(out_png))
    saved = json.loads(out_json.read_text())
    assert [f["kind"] for f in saved["plan"]["faults"]] == [f["kind"] for f in ALL_KINDS["faults"]]
    assert saved["service_time"] == "fixed:ms=5" and saved["machine"]["cpus"] and saved["date"]
    assert "coded_p999_over_hedged" in saved["runs"][0]["comparison"]
    assert out_png.stat().st_size > 10_000 and out_png.read_bytes()[:4] == b"\x89PNG"
    text = bench_command.render(rep)
    assert "p99.9" in text and "contention" in text


async def test_berrut_mode_rescues_stragglers_on_the_replicas_and_gets_its_row(env: tuple[Pool, Path, Path]) -> None:
    """berrut next to coded, through the CLI's parser: a stall on data worker 0 gives degraded
    answers and loses nothing; the crash of plan worker 2 (the one extra worker) lands on the
    replica for berrut and on the parity worker for coded; at k=2 the Berrut decode of the linear
    model is exact, so both modes give the same prediction for every query."""
    pool, queries, _ = env
    plan = {"seed": 3, "faults": [KIND_PLANS["stall"], {"kind": "crash", "worker": 2, "at_s": 1.4,
                                                        "restart_after_s": 0.2}]}
    parser = argparse.ArgumentParser(prog="parm")
    bench_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "--modes", "coded,berrut", "--workers", "2", "--rate", f"{RATE:g}",
                              "--duration", "1.8", "--service-time", "fixed:ms=5", "--plan", json.dumps(plan),
                              "--decode-grace-ms", "25", "--berrut-r", "1", "--no-progress"])
    rep, runs = await run_bench(bench_command.build_config(args), pool, queries)
    modes = rep["runs"][0]["modes"]
    assert list(modes) == ["coded", "berrut"] and rep["berrut_r"] == 1
    for mode, s in modes.items():
        assert s["lost"] == 0 and s["failed"] == 0 and s["answered"] == s["count"] > 50, (mode, s)
        assert s["degraded"] > 0 and s["frontend_stats"]["groups_coded"] > 0, (mode, s)
        assert s["faults_replayed"]["failed"] == [], (mode, s["faults_replayed"])
    killed = {m: {e["worker"] for e in s["faults_replayed"]["events"]} for m, s in modes.items()}
    assert modes["coded"]["faults_replayed"]["applied"] == modes["berrut"]["faults_replayed"]["applied"] == 4
    assert killed == {"coded": {3}, "berrut": {2}}  # pool: data 0, 1; replica 2; parity 3
    rec = {m: r.records for m, r in runs[0].items()}
    degraded_at = rec["berrut"]["sched_s"][rec["berrut"]["degraded"]]
    assert degraded_at.min() >= 0.3 - 0.05 and degraded_at.max() < 1.1 + 0.3, degraded_at  # the stall (+ backlog)
    assert np.array_equal(rec["berrut"]["label"], rec["coded"]["label"])  # the same queries in the same order
    assert np.array_equal(rec["berrut"]["pred"], rec["coded"]["pred"])
    text = bench_command.render(rep)
    assert "berrut r=1 on the replicas" in text and any(line.lstrip().startswith("berrut ") for line in text.splitlines())
    assert "berrut_p999_over_coded" in rep["runs"][0]["comparison"]
