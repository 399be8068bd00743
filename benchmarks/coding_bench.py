"""Coding benchmark: encode + decode time per group (batch 1, 1x28x28 queries) for the sum and concat codes,
timed as the frontend calls them (numpy arrays: frontend.parity._run_parity, group.decode_now), next to the
same coders on torch tensors (the training path).

    .venv/bin/python benchmarks/coding_bench.py [--quick] [--reps N]   -> benchmarks/results/coding.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from results_file import write_json

from coders import Code, make_code
from harness.bench_proc import cpu_model

SHAPE = (1, 28, 28)
CLASSES = 10
TARGET_US = 50.0
RESULTS = ROOT / "benchmarks" / "results" / "coding.json"


# -- what the frontend does (numpy in, numpy out: frontend.parity._run_parity, group.decode_now) ------

def frontend_encode(code: Code, queries: list[np.ndarray]) -> np.ndarray:
    return code.encode(np.stack(queries)[:, None])[0]  # (k, 1, *S) -> (1, *S)


def frontend_decode(code: Code, outputs: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    return {slot: v[0] for slot, v in code.decode({s: o[None] for s, o in outputs.items()}).items()}


# -- the same code on torch tensors (the training path; what the frontend did before) --------------

def torch_encode(code: Code, queries: list[np.ndarray]) -> np.ndarray:
    return code.encode(torch.from_numpy(np.stack(queries)[:, None]))[0].numpy()


def torch_decode(code: Code, outputs: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    available = {s: torch.tensor(v)[None] for s, v in outputs.items()}  # (1, C) each
    return {slot: value[0].numpy() for slot, value in code.decode(available).items()}


# -- timing -------------------------------------------------------------------------------------

def time_calls(fn: Callable[[], object], reps: int) -> dict[str, float]:
    """Per-call wall time in microseconds over ``reps`` calls (after a warm-up): median, p99, mean."""
    for _ in range(min(200, reps)):
        fn()
    samples = np.empty(reps)
    clock = time.perf_counter_ns
    for i in range(reps):
        t0 = clock()
        fn()
        samples[i] = clock() - t0
    samples /= 1000.0
    return {"median_us": float(np.median(samples)), "p99_us": float(np.percentile(samples, 99)),
            "mean_us": float(samples.mean())}


def make_inputs(k: int, seed: int = 0) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """k queries as the handler produces them, and the outputs present when data slot 0 is missing."""
    rng = np.random.default_rng(seed)
    queries = [np.ascontiguousarray(rng.random(SHAPE, dtype=np.float32)) for _ in range(k)]
    outputs = {s: rng.standard_normal(CLASSES).astype(np.float32) for s in range(1, k + 1)}  # slot k = parity
    return queries, outputs


def bench_case(code_name: str, k: int, reps: int) -> list[dict[str, Any]]:
    code = make_code(code_name, k)
    queries, outputs = make_inputs(k)
    check_equivalence(code, queries, outputs)
    parts: dict[str, Callable[[], object]] = {
        "numpy encode": lambda: frontend_encode(code, queries),
        "numpy decode": lambda: frontend_decode(code, outputs),
        "torch encode": lambda: torch_encode(code, queries),
        "torch decode": lambda: torch_decode(code, outputs),
    }
    rows = [{"code": code_name, "k": k, "op": op, **time_calls(fn, reps)} for op, fn in parts.items()]
    rows += [total_row(code_name, k, rows, "numpy"), total_row(code_name, k, rows, "torch")]
    return rows


def total_row(code_name: str, k: int, rows: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """encode + decode per group (sum of medians / of p99s: a slightly pessimistic p99)."""
    enc = next(r for r in rows if r["op"] == f"{path} encode")
    dec = next(r for r in rows if r["op"] == f"{path} decode")
    total = {key: enc[key] + dec[key] for key in ("median_us", "p99_us", "mean_us")}
    return {"code": code_name, "k": k, "op": f"{path} encode+decode", **total,
            "meets_target": total["median_us"] <= TARGET_US}


def check_equivalence(code: Code, queries: list[np.ndarray], outputs: dict[int, np.ndarray]) -> None:
    """Both paths must give the same numbers (else their timings mean nothing)."""
    if not np.allclose(frontend_encode(code, queries), torch_encode(code, queries), atol=1e-6):
        raise AssertionError(f"numpy and torch {code.name} encodes differ")
    ref_d, fast_d = torch_decode(code, outputs), frontend_decode(code, outputs)
    if ref_d.keys() != fast_d.keys() or not all(np.allclose(ref_d[s], fast_d[s], atol=1e-5) for s in ref_d):
        raise AssertionError("numpy and torch decodes differ")


# -- report -------------------------------------------------------------------------------------

def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'code':6} {'k':>2}  {'op':32} {'median us':>10} {'p99 us':>10}  target<=50us"]
    for r in rows:
        mark = "" if "meets_target" not in r else ("MET" if r["meets_target"] else "MISSED")
        lines.append(f"{r['code']:6} {r['k']:>2}  {r['op']:32} {r['median_us']:10.1f} {r['p99_us']:10.1f}  {mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=None, help="calls per measurement (default 20000; 2000 with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    reps = args.reps or (2000 if args.quick else 20000)
    torch.set_num_threads(1)  # the frontend does no intra-op parallel work on such tiny tensors
    rows = [row for code_name in ("sum", "concat") for k in (2, 4) for row in bench_case(code_name, k, reps)]
    print(format_table(rows))
    report = {"benchmark": "coding", "date": dt.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join([".venv/bin/python", "benchmarks/coding_bench.py", *(argv or sys.argv[1:])]),
              "machine": {"nproc": __import__("os").cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                          "torch": torch.__version__, "numpy": np.__version__},
              "reps": reps, "target_us_per_group": TARGET_US, "query_shape": list(SHAPE), "batch": 1, "rows": rows}
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
