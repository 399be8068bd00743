"""Learned parity models and the training-free Berrut code side by side: degraded accuracy on the test
sets of MNIST and Fashion-MNIST for k in {2, 4, 8, 12}, r in {1, 2}, with 1..r data outputs missing.
Writes benchmarks/results/code_compare.json and prints a table.

    .venv/bin/python benchmarks/code_compare.py [--mnist BASE.pt] [--fashion BASE.pt] [--epochs 40]

Learned: concat code, the ``tiled`` parity model, KL loss, a fixed number of epochs (accuracy does not
depend on how busy the machine is); parity model 0 serves r=1, models 0 and 1 serve r=2. Parity
checkpoints are cached in runs/bench/compare/ (delete to retrain). Berrut: the base model is the
parity model. Reference: ApproxIFER's non-systematic scheme (N = K + r workers, all answers
interpolated) with the same base model, computed here for comparison with its published figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep, not spin
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from results_file import write_json

from coders.berrut import berrut_weights, chebyshev_nodes
from parity_models import checkpoint
from parity_models.data import Dataset, load_dataset
from parity_models.device import predict
from parity_models.evaluate import evaluate_learned, make_groups
from parity_models.evaluate_berrut import evaluate_berrut
from parity_models.train import ParityConfig, train_parity
from parity_models.train_base import BaseConfig, train_base

KS = (2, 4, 8, 12)
CACHE = ROOT / "runs" / "bench" / "compare"


def base_for(name: str, path: str | None) -> str:
    if path:
        return path
    out = ROOT / "runs" / "bench" / f"{name}-mlp.pt"
    if not out.is_file():
        train_base(BaseConfig(name, "mlp", str(out), epochs=10, progress=False))
    return str(out)


def learned_parity(base: str, data: Dataset, k: int, index: int, epochs: int) -> tuple[Path, float]:
    """(checkpoint, training wall seconds; 0 if cached) of parity model ``index`` for concat k."""
    out = CACHE / f"{data.name}-k{k}-p{index}.pt"
    if out.is_file():
        return out, 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_parity(ParityConfig(base, k, "concat", str(out), parity_index=index, arch="tiled", loss="kl",
                              epochs=epochs, device="cpu", progress=False), data)
    return out, time.perf_counter() - t0


@torch.no_grad()
def approxifer(base: str, data: Dataset, k: int, r: int) -> dict[str, float]:
    """ApproxIFER (non-systematic): N = k + r workers get the Berrut interpolant of the k queries at
    Chebyshev points of the second kind; with r of them missing (every contiguous pattern), all k
    answers are interpolated from the rest. Top-1 of all k answers, percent."""
    model = checkpoint.build_model(checkpoint.load(base), torch.device("cpu"))
    n = k + r
    alpha, beta = chebyshev_nodes(k), np.sort(np.cos(np.arange(n) * np.pi / (n - 1)))
    idx = make_groups(len(data.test_x), k).T  # (k, G)
    enc = torch.tensor(berrut_weights(alpha, beta), dtype=torch.float32)  # (N, k)
    queries = torch.tensordot(enc, data.test_x[idx], dims=([1], [0]))  # (N, G, *S)
    outs = torch.stack([predict(model, q) for q in queries])  # (N, G, C)
    accs = []
    for first in range(n):
        keep = [i for i in range(n) if (i - first) % n >= r]  # r consecutive workers missing
        dec = torch.tensor(berrut_weights(beta[keep], alpha), dtype=torch.float32)  # (k, N - r)
        decoded = torch.tensordot(dec, outs[keep], dims=([1], [0]))  # (k, G, C)
        accs.append(float((decoded.argmax(-1) == data.test_y[idx]).float().mean()))
    return {"dataset": data.name, "code": "approxifer", "k": k, "r": r, "missing": r,
            "degraded_top1": 100.0 * float(np.mean(accs))}


@torch.no_grad()
def model_cost(base: str, data: Dataset, ks: list[int], repeats: int = 300) -> list[dict]:
    """Median CPU forward time (one thread, batch 1) and multiply-accumulates per query of the base
    model and of the cached row-0 tiled parity models: what a parity worker pays per group."""
    torch.set_num_threads(1)
    x = data.test_x[:1]
    rows = []
    for k, path in [(None, Path(base))] + [(k, CACHE / f"{data.name}-k{k}-p0.pt") for k in ks]:
        if not path.is_file():
            continue
        model = checkpoint.build_model(checkpoint.load(path), torch.device("cpu"))
        macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
        if k is not None:  # the tile MLP runs once per tile
            macs *= k
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
        rows.append({"dataset": data.name, "model": "base" if k is None else f"tiled k={k}", "macs": macs,
                     "median_us": round(1e6 * float(np.median(times)), 1)})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", default=None, help="MNIST base checkpoint (default: trained into runs/bench/)")
    p.add_argument("--fashion", default=None, help="Fashion-MNIST base checkpoint")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--ks", default=",".join(map(str, KS)))
    p.add_argument("--cost", action="store_true", help="only time the cached models (code_compare_cost.json)")
    args = p.parse_args()
    if args.cost:
        cost = [row for name, path in (("mnist", args.mnist), ("fashion-mnist", args.fashion))
                for row in model_cost(base_for(name, path), load_dataset(name), list(map(int, args.ks.split(","))))]
        for row in cost:
            print(f"{row['dataset']:14} {row['model']:12} {row['macs']:>9,} MACs {row['median_us']:8.1f} us")
        write_json(ROOT / "benchmarks" / "results" / "code_compare_cost.json", cost, indent=1)
        return 0
    torch.set_num_threads(os.cpu_count() or 1)
    rows: list[dict] = []
    for name, path in (("mnist", args.mnist), ("fashion-mnist", args.fashion)):
        base, data = base_for(name, path), load_dataset(name)
        for k in map(int, args.ks.split(",")):
            parities = [learned_parity(base, data, k, i, args.epochs) for i in (0, 1)]
            for r in (1, 2):
                for row in evaluate_learned(base, [pt for pt, _ in parities[:r]], device="cpu", data=data):
                    rows.append({**row, "train_wall_s": [round(w, 1) for _, w in parities[:r]]})
                rows += evaluate_berrut(base, k, r, data=data, device="cpu")
                rows.append(approxifer(base, data, k, r))
            print(f"{name} k={k} done", flush=True)
    print(f"{'dataset':14} {'code':10} {'k':>3} {'r':>2} {'missing':>7} {'A_a':>6} {'A_d':>6}")
    for row in rows:
        print(f"{row['dataset']:14} {row['code']:10} {row['k']:>3} {row['r']:>2} {row['missing']:>7} "
              f"{row.get('base_top1', float('nan')):6.2f} {row['degraded_top1']:6.2f}")
    out = ROOT / "benchmarks" / "results" / "code_compare.json"
    write_json(out, {"epochs": args.epochs, "rows": rows}, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
