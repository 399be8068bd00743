"""Bench reporting and wiring without processes: summaries from per-query records, the ParM
comparison and its targets, the table and plot, the CLI's argument checks, plan-to-pool mapping."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from harness import bench_cli, report
from harness.bench import BenchConfig, _seeded, plan_targets, worker_specs


def records(lat: list[float], status: list[int], degraded: list[bool], pred: list[int], label: list[int]) -> dict:
    n = len(lat)
    return {"sched_s": np.linspace(0, 1, n), "latency_ms": np.array(lat, float), "status": np.array(status),
            "degraded": np.array(degraded), "pred": np.array(pred), "label": np.array(label),
            "lag_ms": np.zeros(n)}


def test_summarize_counts_lost_failed_and_accuracy_over_answers_only() -> None:
    rec = records([10, 20, 30, np.nan, 40], [200, 200, 200, 0, 504], [False, True, False, False, False],
                  [1, 2, 3, -1, -1], [1, 2, 0, 4, 4])
    s = report.summarize(rec, {"hedges": 3}, {"frontend_util": 0.5})
    assert (s["count"], s["answered"], s["lost"], s["failed"]) == (5, 3, 1, 1)
    assert s["p50"] == 20 and s["max"] == 30 and s["mean"] == 20
    assert s["degraded"] == 1 and s["frac_degraded"] == pytest.approx(1 / 3)
    assert s["accuracy"] == pytest.approx(2 / 3) and s["accuracy_degraded"] == 1.0
    assert s["hedges"] == 3 and s["statuses"] == {"0": 1, "200": 3, "504": 1}


def _mode(p50: float, p999: float) -> dict:
    return {"p50": p50, "p99.9": p999}


def test_compare_ratios_and_targets() -> None:
    cmp = report.compare({"equal": _mode(10, 110), "coded": _mode(10.2, 35), "hedged": _mode(11, 60)})
    assert cmp["coded_p999_over_equal"] == pytest.approx(35 / 110)
    assert cmp["gap_equal_over_coded"] == pytest.approx(100 / 24.8)
    assert cmp["targets"] == {"coded_p999 <= 0.45 x equal": True, "gap cut >= 4x": True,
                              "median within 5%": True, "coded below hedged (p99.9)": True}
    assert report.compare({"coded": _mode(1, 2)}) == {}


def test_table_and_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lat = {m: rng.exponential(10, 2000) + 5 for m in ("equal", "coded")}
    modes = {m: report.summarize(records(list(v), [200] * len(v), [False] * len(v), [0] * len(v), [0] * len(v)))
             for m, v in lat.items()}
    text = report.table(modes)
    assert text.splitlines()[0].split()[:3] == ["mode", "count", "p50"] and "coded" in text
    path = tmp_path / "p.png"
    report.plot(lat, modes, "title", path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_plan_workers_map_onto_the_shared_pool() -> None:
    cfg = BenchConfig(n_data=4, k=2)
    roles = [s.role for s in worker_specs(cfg)]
    assert roles == ["data"] * 4 + ["replica"] * 2 + ["parity"] * 2
    assert plan_targets(cfg, "none") == [0, 1, 2, 3]
    assert plan_targets(cfg, "equal") == plan_targets(cfg, "hedged") == [0, 1, 2, 3, 4, 5]
    assert plan_targets(cfg, "coded") == [0, 1, 2, 3, 6, 7]
    assert _seeded("exp:mean_ms=5", 2) == "exp:mean_ms=5,seed=3" and _seeded("fixed:ms=5", 2) == "fixed:ms=5"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parm")
    bench_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_defaults_and_checks(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["bench", "--rate", "100,200"])
    assert args.modes == ("none", "equal", "hedged", "coded") and args.rate == (100.0, 200.0)
    cfg = bench_cli.build_config(args)
    assert cfg.parity_model == "builtin:linear:parity_k=2" and cfg.code == "sum" and cfg.max_batch == 1
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--modes", "coded,magic"])
    bad = _parser().parse_args(["bench", "--service-time", "gauss:ms=3"])
    assert bad.func(bad) == 2 and "service time" in capsys.readouterr().err
