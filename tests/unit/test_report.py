"""Bench reporting and wiring without processes: summaries from per-query records, the ParM
comparison and its targets, the table and plot, the CLI's argument checks, plan-to-pool mapping."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from harness import report
from harness.bench import BenchConfig
from harness.bench_modes import ALL_MODES, _seeded, frontend_args, healthy_needed, plan_targets, worker_specs
from parm import bench_command


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
    cmp = report.compare({"equal": _mode(10, 110), "coded": _mode(10.1, 30), "hedged": _mode(11, 60)})
    assert cmp["coded_p999_over_equal"] == pytest.approx(30 / 110)
    assert cmp["gap_equal_over_coded"] == pytest.approx(100 / 19.9)
    assert cmp["targets"] == {"coded_p999 <= 0.40 x equal": True, "gap cut >= 4.5x": True,
                              "median within 2%": True, "coded below hedged (p99.9)": True,
                              "degraded <= 1.5 x exposed": None}  # no exposure recorded
    slow = report.compare({"equal": _mode(10, 110), "coded": {**_mode(10.5, 50), "frac_degraded": 0.1,
                                                              "exposed_frac": 0.05}})
    assert slow["targets"] == {"coded_p999 <= 0.40 x equal": False, "gap cut >= 4.5x": False,
                               "median within 2%": False, "coded below hedged (p99.9)": None,
                               "degraded <= 1.5 x exposed": False}
    assert report.compare({"coded": _mode(1, 2)}) == {}


def test_compare_puts_berrut_against_equal_and_coded_without_parm_targets() -> None:
    cmp = report.compare({"equal": _mode(10, 100), "coded": _mode(10, 40), "berrut": _mode(11, 50)})
    assert cmp["berrut_p999_over_equal"] == pytest.approx(0.5) and cmp["berrut_p50_over_equal"] == pytest.approx(1.1)
    assert cmp["berrut_p999_over_coded"] == pytest.approx(1.25) and cmp["berrut_p50_over_coded"] == pytest.approx(1.1)
    assert not any("berrut" in t for t in cmp["targets"])
    only = report.compare({"equal": _mode(10, 100), "berrut": _mode(11, 50)})
    assert set(only) == {"berrut_p999_over_equal", "berrut_p50_over_equal"}  # no coded: no ParM targets
    lines = report.comparison_lines(only)
    assert lines == ["berrut p99.9 / equal p99.9: 0.500", "berrut p50 / equal p50: 1.100"]


def test_table_and_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lat = {m: rng.exponential(10, 2000) + 5 for m in ("equal", "coded")}
    modes = {m: report.summarize(records(list(v), [200] * len(v), [False] * len(v), [0] * len(v), [0] * len(v)))
             for m, v in lat.items()}
    text = report.table(modes)
    assert text.splitlines()[0].split()[:3] == ["mode", "count", "p50"] and "coded" in text
    header, _, row = text.splitlines()[:3]
    assert dict(zip(header.split(), row.split()))["acc_deg"] == "-"  # no degraded answer to score
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
    assert plan_targets(cfg, "berrut") == plan_targets(cfg, "equal")  # its parity workers are the replicas
    assert healthy_needed(cfg, "berrut") == healthy_needed(cfg, "coded") == (4, 2)
    assert healthy_needed(cfg, "equal") == (6, 0) and healthy_needed(cfg, "none") == (4, 0)
    no_coded = BenchConfig(n_data=4, k=2, modes=("equal", "berrut"))
    assert [s.role for s in worker_specs(no_coded)] == ["data"] * 4 + ["replica"] * 2  # no parity model needed
    assert no_coded.parity_spec is None and cfg.parity_spec == "builtin:linear:parity_k=2"
    assert _seeded("exp:mean_ms=5", 2) == "exp:mean_ms=5,seed=3" and _seeded("fixed:ms=5", 2) == "fixed:ms=5"


class _Cluster:
    """The addresses of a pool laid out as worker_specs lays it out, on made-up ports."""

    def addresses(self, role: str) -> list[tuple[str, int]]:
        base = {"data": 9000, "replica": 9100, "parity": 9200}[role]
        return [("127.0.0.1", base + i) for i in range(4 if role == "data" else 2)]


def test_berrut_frontend_runs_coded_mode_with_the_replicas_as_parity_workers() -> None:
    cfg = BenchConfig(n_data=4, k=2, berrut_r=2)
    args = frontend_args(cfg, "berrut", _Cluster())  # type: ignore[arg-type]
    flag = dict(zip(args[::2], args[1::2]))  # every flag takes a value
    assert (flag["--mode"], flag["--code"], flag["--r"], flag["--k"]) == ("coded", "berrut", "2", "2")
    assert flag["--parity"] == "127.0.0.1:9100,127.0.0.1:9101"
    args = frontend_args(cfg, "coded", _Cluster())  # type: ignore[arg-type]
    coded = dict(zip(args[::2], args[1::2]))
    assert (coded["--code"], coded["--parity"]) == ("sum", "127.0.0.1:9200,127.0.0.1:9201") and "--r" not in coded
    with pytest.raises(ValueError, match="berrut-r"):
        BenchConfig(n_data=4, k=2, berrut_r=3)  # only N/k = 2 replicas to put 3 parity queries on
    with pytest.raises(ValueError, match="k >= 2"):
        BenchConfig(k=1, modes=("berrut",))
    BenchConfig(n_data=4, k=2, berrut_r=3, modes=("coded",))  # r is berrut's alone


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parm")
    bench_command.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_defaults_and_checks(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["bench", "--rate", "100,200"])
    assert args.modes == ("none", "equal", "hedged", "coded", "berrut") and args.rate == (100.0, 200.0)
    cfg = bench_command.build_config(args)
    assert cfg.parity_model == "builtin:linear:parity_k=2" and cfg.code == "sum" and cfg.max_batch == 1
    assert cfg.berrut_r == 1 and bench_command.MODES == ALL_MODES
    # berrut alone needs no parity model, even for a checkpoint base model (none is ever loaded)
    ckpt = bench_command.build_config(_parser().parse_args(["bench", "--modes", "equal,berrut", "--model", "m.pt"]))
    assert ckpt.parity_spec is None
    too_many = _parser().parse_args(["bench", "--workers", "4", "--berrut-r", "3", "--modes", "berrut"])
    assert too_many.func(too_many) == 2 and "--berrut-r must be in 1..2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--modes", "coded,magic"])
    bad = _parser().parse_args(["bench", "--service-time", "gauss:ms=3"])
    assert bad.func(bad) == 2 and "service time" in capsys.readouterr().err


def test_parity_workers_are_charged_their_models_cost_in_service_time_mode() -> None:
    """--parity-cost C: parity workers sleep C times as long as data workers and replicas."""
    from workers.model import parse_service_time

    specs = worker_specs(BenchConfig(n_data=4, k=2, service_time="fixed:ms=80", parity_cost=2.5,
                                     modes=("equal", "coded")))
    times = {s.role: parse_service_time(s.service_time)() for s in specs}
    assert times == {"data": pytest.approx(0.08), "replica": pytest.approx(0.08), "parity": pytest.approx(0.2)}
    with pytest.raises(ValueError, match="parity-cost"):
        BenchConfig(service_time="file:x.json", parity_cost=2.0)
    assert parse_service_time("exp:mean_ms=10,seed=1,scale=3")() == pytest.approx(
        3 * parse_service_time("exp:mean_ms=10,seed=1")())
