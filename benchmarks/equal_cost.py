"""Every redundancy scheme at its real cost, one table: for MNIST and Fashion-MNIST, an MLP and a CNN
(LeNet-5) base, k in {2, 4, 8}: ParM's parity model (the base's architecture, from its weights), the
tiled parity model and the collage backup each sized to one base query of MACs (``--cost-budget 1``),
Berrut (the base model as parity model) and equal-resources replication (exact answers: the ceiling).

    .venv/bin/python benchmarks/equal_cost.py [--budget 60] [--ks 2,4,8] [--straggler-rate 0.05]

Columns: degraded top-1 (one data output missing, decoded as the frontend does, test split); accuracy
of all answers when a fraction p of data queries is answered degraded, (1 - p) A_a + p A_d; a parity
query's cost over a base query's in MACs and in measured time (median at batch 1 and 64, one thread, the
two models timed alternately); overhead = cost x r / k. Trained models are cached in runs/bench/equal_cost/
(delete to retrain). Writes benchmarks/results/equal_cost.json and prints the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep, not spin
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from results_file import write_json

from parity_models import checkpoint
from parity_models.cost import macs_per_query
from parity_models.data import Dataset, load_dataset
from parity_models.evaluate import evaluate
from parity_models.evaluate_berrut import evaluate_berrut
from parity_models.train import ParityConfig, train_parity
from parity_models.train_base import BaseConfig, train_base

CACHE = ROOT / "runs" / "bench" / "equal_cost"
BASE_EPOCHS = {"mlp": 15, "lenet5": 6}
# scheme -> (code, arch, init, cost budget); every learned scheme uses the KL loss
LEARNED = {"parm": ("concat", "same", "base", None), "tiled@1": ("concat", "tiled", None, 1.0),
           "collage@1": ("collage", "collage", None, 1.0)}


def base_model(cache: Path, dataset: str, arch: str, data_dir: str | None) -> Path:
    out = cache / f"{dataset}-{arch}.pt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        train_base(BaseConfig(dataset, arch, str(out), epochs=BASE_EPOCHS[arch], device="cpu",
                              data_dir=data_dir, progress=False))
    return out


def learned(base: Path, data: Dataset, scheme: str, k: int, budget: float) -> tuple[Path, float, int]:
    """(checkpoint, training wall seconds or ~0 when cached, epochs) of ``scheme`` at k, next to ``base``."""
    code, arch, init, cost = LEARNED[scheme]
    out = base.with_name(f"{base.stem}-{scheme.replace('@', '')}-k{k}.pt")
    t0 = time.perf_counter()
    if not out.is_file():
        train_parity(ParityConfig(str(base), k, code, str(out), arch=arch, init=init, cost_budget=cost, loss="kl",
                                  epochs=10**6, time_budget=budget, device="cpu", progress=False), data)
    return out, time.perf_counter() - t0, int(checkpoint.load(out)["meta"]["epochs"])


@torch.no_grad()
def time_ratio(base: torch.nn.Module, parity: torch.nn.Module, x: torch.Tensor, repeats: int = 300) -> float:
    """Median forward time of ``parity`` over ``base`` at batch 1 on one thread, timed alternately so both
    see the same machine; x (1, *S)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"base": [], "parity": []}
    try:
        for _ in range(repeats):
            for name, model in (("base", base), ("parity", parity)):
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times["parity"]) / np.median(times["base"]))


def learned_row(base: Path, parity: Path, data: Dataset, scheme: str, k: int, p: float) -> dict[str, Any]:
    res = evaluate(base, parity, device="cpu", data=data)
    base_m, parity_m = (checkpoint.build_model(checkpoint.load(x), torch.device("cpu")).eval() for x in (base, parity))
    return {"scheme": scheme, "k": k, "base_top1": res["base_top1"], "degraded_top1": res["degraded_top1"],
            "all_answers_top1": (1 - p) * res["base_top1"] + p * res["degraded_top1"],
            "parity_cost_macs": res["parity_cost"], "parity_cost_time": time_ratio(base_m, parity_m, data.test_x[:1]),
            "parity_cost_time_b64": time_ratio(base_m, parity_m, data.test_x[:64], repeats=100),
            "overhead": res["overhead"], "parity_hidden": checkpoint.load(parity)["arch_args"].get("hidden")}


def fixed_rows(base: Path, data: Dataset, k: int, p: float) -> list[dict[str, Any]]:
    """Berrut (r=1; its parity worker runs the base model) and equal-resources replication (1/k extra
    workers running the base: every answer it gives is the base model's, so no accuracy is lost)."""
    b = evaluate_berrut(base, k, 1, device="cpu", data=data)[0]
    acc = b["base_top1"]
    return [{"scheme": "berrut", "k": k, "base_top1": acc, "degraded_top1": b["degraded_top1"],
             "all_answers_top1": (1 - p) * acc + p * b["degraded_top1"], "parity_cost_macs": 1.0,
             "parity_cost_time": 1.0, "parity_cost_time_b64": 1.0, "overhead": 1.0 / k},
            {"scheme": "replication", "k": k, "base_top1": acc, "degraded_top1": acc, "all_answers_top1": acc,
             "parity_cost_macs": 1.0, "parity_cost_time": 1.0, "parity_cost_time_b64": 1.0, "overhead": 1.0 / k}]


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = ("| dataset | base | k | scheme | degraded top-1 | all answers | cost (MACs) | cost (time, batch 1 / 64) "
            "| overhead |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['base']} | {r['k']} | {r['scheme']} | {r['degraded_top1']:.2f} | "
                     f"{r['all_answers_top1']:.2f} | {r['parity_cost_macs']:.2f} | "
                     f"{r['parity_cost_time']:.2f} / {r['parity_cost_time_b64']:.2f} | "
                     f"{100 * r['overhead']:.0f}% |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="mnist,fashion-mnist")
    p.add_argument("--bases", default="mlp,lenet5")
    p.add_argument("--ks", default="2,4,8")
    p.add_argument("--schemes", default=",".join(LEARNED))
    p.add_argument("--budget", type=float, default=60.0, help="seconds of training per parity model")
    p.add_argument("--straggler-rate", type=float, default=0.05, help="fraction of data queries answered degraded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache", default=str(CACHE), help="where trained models are kept (and reused)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "equal_cost.json"))
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    base_macs: dict[str, int | None] = {}
    for name in args.datasets.split(","):
        data = load_dataset(name, args.data_dir)
        for arch in args.bases.split(","):
            base = base_model(Path(args.cache), name, arch, args.data_dir)
            ckpt = checkpoint.load(base)
            base_macs[base.stem] = macs_per_query(checkpoint.build_model(ckpt), ckpt["input_shape"])
            for k in map(int, args.ks.split(",")):
                for scheme in args.schemes.split(","):
                    parity, wall, epochs = learned(base, data, scheme, k, args.budget)
                    row = learned_row(base, parity, data, scheme, k, args.straggler_rate)
                    rows.append({"dataset": name, "base": arch, **row, "train_wall_s": round(wall, 1),
                                 "epochs": epochs})
                    print(f"{name} {arch} k={k} {scheme}: {row['degraded_top1']:.2f} "
                          f"(cost {row['parity_cost_macs']:.2f}, {epochs} epochs)", flush=True)
                rows += [{"dataset": name, "base": arch, **r} for r in fixed_rows(base, data, k, args.straggler_rate)]
    print(format_rows(rows))
    write_json(Path(args.out), {"budget_s": args.budget, "straggler_rate": args.straggler_rate,
                                "base_macs": base_macs, "rows": rows}, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
