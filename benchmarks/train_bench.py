"""Training benchmark: base + parity models on MNIST / Fashion-MNIST, scored on
the test set (base, degraded and reconstruction accuracy), written to benchmarks/results/training.json.

    .venv/bin/python benchmarks/train_bench.py [--quick] [--budget SECONDS] [--only mnist-mlp-k2-concat]

Runs train for a fixed number of epochs (so accuracy does not depend on how busy the machine is) and
report their wall time; --budget switches to a fixed time budget per run instead.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads made
# epochs up to 8x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from results_file import write_json  # noqa: E402

from parity_models.evaluate import evaluate, format_table  # noqa: E402
from parity_models.train import ParityConfig, train_parity  # noqa: E402
from parity_models.train_base import BaseConfig, train_base  # noqa: E402

# (dataset, base arch, k, code, parity arch, parity epochs); ANCHORS.md: ParM's trainer after 8 minutes.
RUNS = [("mnist", "mlp", 2, "concat", "same", 50), ("mnist", "mlp", 2, "sum", "same", 80),
        ("mnist", "mlp", 4, "concat", "same", 80), ("fashion-mnist", "mlp", 2, "concat", "same", 50),
        ("fashion-mnist", "mlp", 4, "concat", "same", 80), ("mnist", "lenet5", 2, "concat", "same", 20)]
ANCHOR = {("mnist", 2, "concat"): 96.36, ("mnist", 4, "concat"): 82.19, ("fashion-mnist", 2, "concat"): 79.33,
          ("fashion-mnist", 4, "concat"): 64.03, ("mnist", 2, "sum"): 91.34}
BASE_EPOCHS = {"mlp": 10, "lenet5": 6}
COLUMNS = ("dataset", "k", "code", "arch", "epochs", "wall_s", "base_top1", "degraded_top1", "recon_top1",
           "base_top5", "degraded_top5", "recon_top5", "parm_8min")


def run_name(dataset: str, arch: str, k: int, code: str) -> str:
    return f"{dataset}-{arch}-k{k}-{code}"


def base_model(dataset: str, arch: str, work: Path, epochs: int) -> tuple[Path, float]:
    """Train (once per benchmark run) the base model; returns its path and wall time."""
    path = work / f"{dataset}-{arch}-base.pt"
    t0 = time.perf_counter()
    if not path.is_file():
        train_base(BaseConfig(dataset, arch, str(path), epochs=epochs, progress=False))
    return path, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="mlp runs only, short budgets (a smoke test)")
    p.add_argument("--budget", type=float, default=None, help="train each parity model for this many seconds "
                                                                 "instead of a fixed number of epochs")
    p.add_argument("--only", nargs="*", default=None, help="run names to keep, e.g. mnist-mlp-k2-concat")
    p.add_argument("--work-dir", default="/tmp/parm-train-bench", help="where checkpoints go")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "training.json"))
    args = p.parse_args()
    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    runs = [r for r in RUNS if not (args.quick and r[1] != "mlp")]
    if args.only:
        runs = [r for r in runs if run_name(*r[:4]) in args.only]

    rows = []
    for dataset, arch, k, code, parity_arch, epochs in runs:
        base_path, base_s = base_model(dataset, arch, work, 2 if args.quick else BASE_EPOCHS[arch])
        out = work / f"{run_name(dataset, arch, k, code)}.pt"
        epochs = None if args.budget else (3 if args.quick else epochs)
        print(f"== {run_name(dataset, arch, k, code)}: parity training for "
              f"{f'{args.budget:.0f} s' if args.budget else f'{epochs} epochs'}", flush=True)
        t0 = time.perf_counter()
        best = train_parity(ParityConfig(str(base_path), k, code, str(out), arch=parity_arch, epochs=epochs,
                                         time_budget=args.budget, progress=False))
        wall = time.perf_counter() - t0
        result = evaluate(base_path, out)
        history = torch.load(out.with_name(out.stem + ".last.pt"), weights_only=True)["train_state"]["history"]
        rows.append({**result, "arch": arch, "epochs": len(history), "best_epoch": best["meta"]["epochs"],
                     "wall_s": round(wall, 1), "budget_s": args.budget, "base_train_s": round(base_s, 1),
                     "parm_8min": ANCHOR.get((dataset, k, code)),
                     "val_curve": [[h["epoch"], h["elapsed_s"], round(h["degraded_top1"], 2)] for h in history]})
        print(format_table(rows[-1:], COLUMNS), flush=True)
        write_report(Path(args.out), rows)  # after every run, so an interrupted benchmark keeps its results

    print("\n" + format_table(rows, COLUMNS))
    print(f"wrote {args.out}")


def write_report(path: Path, rows: list[dict]) -> None:
    report = {"command": " ".join(["benchmarks/train_bench.py"] + sys.argv[1:]), "torch": torch.__version__,
              "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
              "machine": platform.machine(), "note": "wall times on a shared 2-core machine are approximate",
              "runs": rows}
    write_json(path, report, indent=1)


if __name__ == "__main__":
    main()
