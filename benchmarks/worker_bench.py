"""A worker's own CPU per request: benchmarks/loadgen.py calls one `parm worker` (builtin:linear, one
thread) directly over its TCP protocol, at a Poisson rate (one request per wake-up, as at moderate
load), closed loops of 32 (batches) and of 1. With --base-tree DIR, a worker started from another
checkout (e.g. `git worktree add /tmp/base <commit>`) runs the same loads, alternated round by round.

    .venv/bin/python benchmarks/worker_bench.py [--rate 1000] [--rounds 2] [--base-tree /tmp/base]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frontend_procs import run_load

from workers.cluster import LocalCluster, WorkerSpec


@contextlib.contextmanager
def cwd(path: Path) -> Iterator[None]:
    """Workers start with `python -m workers.cli`, which imports the package from the working directory."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


async def bench(args: argparse.Namespace) -> dict[str, dict[str, list[tuple[float, float]]]]:
    trees = {"this": ROOT, **({"base": args.base_tree.resolve()} if args.base_tree else {})}
    loads = {f"poisson {args.rate:g}/s": ["--rate", str(args.rate)], "closed 32": ["--closed", "32"],
             "closed 1": ["--closed", "1"]}
    results: dict[str, dict[str, list[tuple[float, float]]]] = {t: {name: [] for name in loads} for t in trees}
    for r in range(args.rounds):
        for tree, path in trees.items():
            cluster = LocalCluster([WorkerSpec("data", "builtin:linear", threads=1)])
            with cwd(path):
                await cluster.start()
            try:
                target = ["--worker", ",".join(f"{h}:{p}" for h, p in cluster.addresses("data"))]
                for name, load in loads.items():
                    s = await run_load(target, load, args.seconds, 0.5, "msgpack", {"worker": cluster.workers[0].proc.pid})
                    cpu = s["cpu_us_per_answer"]["worker"]
                    results[tree][name].append((s["achieved_rate"], cpu))
                    print(f"  {tree:<5} {name:<16} {s['achieved_rate']:9.1f} req/s  worker {cpu:6.1f} us/request"
                          f"  p50 {s['p50_ms']:.2f} ms  [round {r + 1}]", flush=True)
            finally:
                await cluster.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=1000.0, help="Poisson load, req/s")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0, help="per load")
    p.add_argument("--base-tree", type=Path, default=None, help="a checkout to compare with (git worktree)")
    args = p.parse_args(argv)
    results = asyncio.run(bench(args))
    print("\nmedians over rounds: req/s, worker CPU per request")
    for name in next(iter(results.values())):
        row = [f"{tree} {statistics.median(r for r, _ in v[name]):8.1f} req/s {statistics.median(c for _, c in v[name]):6.1f} us"
               for tree, v in results.items()]
        print(f"  {name:<16} " + "   ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
