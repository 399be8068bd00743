"""The simulator's scale study (benchmarks/results/simulate.md): ParM's headline setting, then the
coded-vs-equal benefit across cluster size, load and k. ``python -m harness.sim_study [--quick]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from harness.plan import parse_plan
from harness.sim_config import MODES, SimConfig
from harness.simulate import simulate

SERVICE = "lognormal:median_ms=5,sigma=0.2"
MEAN_S = 0.00510  # mean of that lognormal: 5 ms * exp(0.2**2 / 2)


def contention(factor: float = 8.0, rate_per_s: float = 0.1, duration_ms: float = 300.0, seed: int = 1) -> dict:
    """Background-transfer stragglers: each worker slowed ``factor``x for ``duration_ms`` at Poisson
    times; rate * duration = the fraction of time (and of requests) affected: 3% by default."""
    return {"seed": seed, "faults": [{"kind": "contention", "workers": "all", "rate_per_s": rate_per_s,
                                      "factor": factor, "duration_ms": duration_ms}]}


def base(workers: int = 12, k: int = 2, load: float = 0.75, queries: int = 100_000, seed: int = 1,
         plan: dict | None = None) -> SimConfig:
    """Poisson load as a fraction of the n data workers' capacity, enough queries for p99.9."""
    rate = load * workers / MEAN_S
    return SimConfig(workers=workers, k=k, rate=rate, duration_s=queries / rate, service=SERVICE, seed=seed,
                     plan=parse_plan(plan or contention(seed=seed)))


def _one(cfg: SimConfig) -> dict[str, Any]:
    r = simulate(cfg)
    return {k: v for k, v in r.items() if k != "settings"}


def run_grid(configs: list[SimConfig], modes: tuple[str, ...] = MODES, jobs: int = 2) -> list[dict[str, dict]]:
    """Each config in each mode, ``jobs`` processes; one {mode: metrics} per config."""
    tasks = [dataclasses.replace(c, mode=m) for c in configs for m in modes]
    with ProcessPoolExecutor(jobs) as ex:
        results = list(ex.map(_one, tasks))
    return [{m: results[i * len(modes) + j] for j, m in enumerate(modes)} for i in range(len(configs))]


def row(label: str, by_mode: dict[str, dict]) -> str:
    c, e, h = by_mode["coded"], by_mode["equal"], by_mode["hedged"]
    return (f"| {label} | {c['p50']:.2f} / {e['p50']:.2f} / {h['p50']:.2f} | {c['p99']:.1f} / {e['p99']:.1f} / "
            f"{h['p99']:.1f} | {c['p99.9']:.1f} / {e['p99.9']:.1f} / {h['p99.9']:.1f} | "
            f"{c['p99.9'] / e['p99.9']:.2f} | {e['gap'] / c['gap']:.2f} | {h['p99.9'] / e['p99.9']:.2f} | "
            f"{by_mode['none']['p99.9']:.1f} | {c['degraded']:.3f} | {h['hedges'] / h['count']:.3f} |")


HEADER = ("| {0} | p50 coded / equal / hedged | p99 c / e / h | p99.9 c / e / h | p99.9 coded/equal | "
          "gap equal/coded | p99.9 hedged/equal | p99.9 none | degraded | hedge rate |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def study(quick: bool = False) -> dict[str, list[tuple[str, dict]]]:
    q = 20_000 if quick else 100_000
    sections: dict[str, list[tuple[str, SimConfig]]] = {
        "headline (k=2, 12 data workers, load 0.75, contention 8x for 300 ms, 3% of time)":
            [(f"seed {s}", base(queries=q * 2, seed=s)) for s in (1, 2, 3)],
        "scale (k=2, load 0.75)": [(f"{n} data workers", base(workers=n, queries=q if n < 1000 else 3 * q))
                                   for n in (12, 120, 1000)],
        "load (k=2, 12 data workers)": [(f"load {x}", base(load=x, queries=q)) for x in (0.5, 0.6, 0.7, 0.8)],
        "k (12 data workers, load 0.75)": [(f"k={k} ({12 // k} extra)", base(k=k, queries=q)) for k in (2, 3, 4)],
        "straggler severity (k=2, 12 data workers, load 0.75)":
            [(f"{f:g}x, {r:g}/s x {d:g} ms", base(queries=q, plan=contention(f, r, d)))
             for f, r, d in ((5, 0.1, 300), (10, 0.1, 300), (8, 0.3, 100), (8, 0.05, 1000), (20, 0.02, 500))],
        "decode grace (k=2, 12 data workers, load 0.75): wait this long for the real output before decoding":
            [(f"grace {g:g} ms", dataclasses.replace(base(queries=q), decode_grace_ms=g)) for g in (0, 1, 2, 5, 10)],
    }
    out: dict[str, list[tuple[str, dict]]] = {}
    for title, items in sections.items():
        results = run_grid([c for _, c in items])
        out[title] = [(label, r) for (label, _), r in zip(items, results)]
        print(f"\n### {title}\n\n{HEADER.format('setting')}")
        for label, r in out[title]:
            print(row(label, r), flush=True)
    return out


def variants(queries: int = 100_000) -> None:
    """Frontend policy variants at the headline setting (seed 1): what the real frontend could change."""
    cfg = base(queries=queries)
    opts = [("release load on cancel (old frontend)", {"hold_load_until_done": False}),
            ("hold load until the worker is done (frontend now)", {}),
            ("hold load + cancel at worker", {"cancel_at_worker": True})]
    results = run_grid([dataclasses.replace(cfg, **o) for _, o in opts], modes=("coded", "hedged", "equal"))
    print("\n| variant | coded p50 / p99 / p99.9 | hedged p50 / p99 / p99.9 | equal p99.9 | coded degraded |\n"
          "|---|---|---|---|---|")
    for (label, _), r in zip(opts, results):
        c, h = r["coded"], r["hedged"]
        print(f"| {label} | {c['p50']:.2f} / {c['p99']:.1f} / {c['p99.9']:.1f} | {h['p50']:.2f} / {h['p99']:.1f} / "
              f"{h['p99.9']:.1f} | {r['equal']['p99.9']:.1f} | {c['degraded']:.3f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer queries per setting")
    p.add_argument("--json", default=None)
    p.add_argument("--variants", action="store_true", help="only the frontend-policy variants")
    args = p.parse_args()
    if args.variants:
        variants()
        return
    out = study(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
