"""Degraded-mode accuracy of the training-free Berrut code on MNIST and Fashion-MNIST (base MLPs),
k in {2, 4, 8, 12}, r in {1, 2}, 1..r missing outputs; prints a table, writes berrut.json.

    .venv/bin/python benchmarks/berrut_eval.py --mnist BASE.pt --fashion BASE.pt
(base checkpoints from `parm train-base --dataset D --model mlp --out BASE.pt`; trained here into
runs/bench/ when not given).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from parity_models.data import load_dataset  # noqa: E402
from parity_models.evaluate_berrut import evaluate_berrut  # noqa: E402
from parity_models.train_base import BaseConfig, train_base  # noqa: E402


def base_for(name: str, path: str | None) -> str:
    if path:
        return path
    out = ROOT / "runs" / "bench" / f"{name}-mlp.pt"
    if not out.is_file():
        train_base(BaseConfig(name, "mlp", str(out), epochs=10, progress=False))
    return str(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", default=None)
    p.add_argument("--fashion", default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    rows = []
    for name, path in (("mnist", args.mnist), ("fashion-mnist", args.fashion)):
        base, data = base_for(name, path), load_dataset(name)
        for k in (2, 4, 8, 12):
            for r in (1, 2):
                rows += evaluate_berrut(base, k, r, data=data, device=args.device)
    print(f"{'dataset':14} {'k':>3} {'r':>2} {'missing':>7} {'A_a':>6} {'A_d':>6} {'recon':>6} {'A_d top5':>8}")
    for row in rows:
        print(f"{row['dataset']:14} {row['k']:>3} {row['r']:>2} {row['missing']:>7} {row['base_top1']:6.2f} "
              f"{row['degraded_top1']:6.2f} {row['recon_top1']:6.2f} {row['degraded_top5']:8.2f}")
    out = ROOT / "benchmarks" / "results" / "berrut.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
