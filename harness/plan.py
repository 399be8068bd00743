"""Fault plans: a small JSON vocabulary of stragglers and failures, expanded with a seed into an
exact timeline that every serving mode of a benchmark (and the simulator) replays identically.

A plan file::

    {"seed": 1, "faults": [
      {"kind": "delay", "workers": "all", "p": 0.01, "dist": "exp", "mean_ms": 50},
      {"kind": "contention", "workers": "all", "rate_per_s": 0.2, "factor": 5, "duration_ms": 500},
      {"kind": "stall", "worker": 3, "at_s": 10, "duration_ms": 2000},
      {"kind": "crash", "worker": 5, "at_s": 20, "restart_after_s": 5},
      {"kind": "drop", "worker": 2, "at_s": 30, "duration_ms": 100}]}

- delay: each request to the workers is delayed with probability p (dist fixed|uniform|exp).
- contention: at Poisson times (rate per worker), a worker's service time is multiplied by
  ``factor`` for ``duration_ms`` (an emulation of ParM's background transfers and co-located tenants).
- stall: the worker hangs every request for the window; crash: its process is killed at ``at_s``
  and, if ``restart_after_s`` is set, started again; drop: its connections are cut during the window.
Workers are numbered 0..n-1 for data workers, then the extra (parity or replica) workers.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("delay", "contention", "stall", "crash", "drop")


class PlanError(ValueError):
    """A fault plan is malformed; the message names the rule and the field."""


@dataclass(frozen=True)
class Rule:
    kind: str
    workers: tuple[int, ...] | None = None   # None: all workers
    p: float = 1.0
    dist: str = "fixed"
    mean_ms: float = 0.0
    rate_per_s: float = 0.0
    factor: float = 1.0
    duration_ms: float = 0.0
    at_s: float = 0.0
    restart_after_s: float | None = None


@dataclass(frozen=True)
class Event:
    """At ``t_s``, worker ``worker``: set its fault spec (action "spec"), kill it, or restart it."""

    t_s: float
    worker: int
    action: str          # "spec" | "kill" | "restart"
    spec: str = "none"


@dataclass
class FaultPlan:
    seed: int = 0
    rules: list[Rule] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The plan exactly as run, for reports."""
        return {"seed": self.seed, "faults": [_rule_dict(r) for r in self.rules]}


def _rule_dict(r: Rule) -> dict[str, Any]:
    keep = {"delay": ("workers", "p", "dist", "mean_ms"), "contention": ("workers", "rate_per_s", "factor", "duration_ms"),
            "stall": ("workers", "at_s", "duration_ms"), "crash": ("workers", "at_s", "restart_after_s"),
            "drop": ("workers", "at_s", "duration_ms")}[r.kind]
    out: dict[str, Any] = {"kind": r.kind}
    for name in keep:
        value = getattr(r, name)
        out[name] = "all" if name == "workers" and value is None else (list(value) if isinstance(value, tuple) else value)
    return out


def parse_plan(obj: dict[str, Any]) -> FaultPlan:
    if not isinstance(obj, dict) or not isinstance(obj.get("faults", []), list):
        raise PlanError('a plan is a map {"seed": int, "faults": [rule, ...]}')
    return FaultPlan(seed=int(obj.get("seed", 0)), rules=[_parse_rule(i, r) for i, r in enumerate(obj.get("faults", []))])


def load_plan(path: str | Path) -> FaultPlan:
    try:
        return parse_plan(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"cannot read fault plan {path}: {exc}") from exc


def plan_from_arg(text: str) -> FaultPlan:
    """A ``--plan`` argument: inline JSON (starts with "{") or the path of a JSON file."""
    if not text.lstrip().startswith("{"):
        return load_plan(text)
    try:
        return parse_plan(json.loads(text))
    except json.JSONDecodeError as exc:
        raise PlanError(f"inline fault plan is not valid JSON: {exc}") from exc


def _parse_rule(i: int, raw: Any) -> Rule:
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise PlanError(f"fault {i}: needs a kind among {KINDS}")
    raw = dict(raw)
    kind = raw.pop("kind")
    workers = raw.pop("workers", raw.pop("worker", "all"))
    if workers != "all":
        workers = (workers,) if isinstance(workers, int) else workers
        if not isinstance(workers, (list, tuple)) or not all(isinstance(w, int) and w >= 0 for w in workers):
            raise PlanError(f"fault {i} ({kind}): workers must be 'all', an index or a list of indices")
        workers = tuple(workers)
    try:
        rule = Rule(kind=kind, workers=None if workers == "all" else workers, **raw)
    except TypeError as exc:
        raise PlanError(f"fault {i} ({kind}): {exc}") from exc
    _validate(i, rule)
    return rule


def _validate(i: int, r: Rule) -> None:
    checks = [(0 <= r.p <= 1, "p must be in [0, 1]"), (r.dist in ("fixed", "uniform", "exp"), "dist unknown"),
              (r.mean_ms >= 0 and r.duration_ms >= 0 and r.at_s >= 0 and r.rate_per_s >= 0, "times must be >= 0"),
              (r.factor >= 1, "factor must be >= 1"),
              (r.restart_after_s is None or r.restart_after_s >= 0, "restart_after_s must be >= 0")]
    for ok, message in checks:
        if not ok:
            raise PlanError(f"fault {i} ({r.kind}): {message}")


def worker_spec(plan: FaultPlan, worker: int) -> str:
    """The constant part of a worker's fault spec (per-request delays), for the whole run."""
    parts = [f"delay:mean_ms={r.mean_ms:g},dist={r.dist},p={r.p:g}" for r in plan.rules
             if r.kind == "delay" and _applies(r, worker)]
    return "+".join(parts) or "none"


def _applies(r: Rule, worker: int) -> bool:
    return r.workers is None or worker in r.workers


def expand(plan: FaultPlan, n_workers: int, duration_s: float) -> list[Event]:
    """The timeline of the plan over ``duration_s`` for ``n_workers``, sorted by time.

    The same (plan, n_workers, duration) always gives the same events: modes compare fairly."""
    rng = random.Random(plan.seed)
    windows: list[tuple[float, float, int, str]] = []   # (start, end, worker, spec part)
    events: list[Event] = []
    for r in plan.rules:
        targets = [w for w in range(n_workers) if _applies(r, w)]
        if r.kind == "contention":
            for w in targets:
                t = rng.expovariate(r.rate_per_s) if r.rate_per_s > 0 else duration_s
                while t < duration_s:
                    windows.append((t, t + r.duration_ms / 1000, w, f"slow:factor={r.factor:g}"))
                    t += r.duration_ms / 1000 + rng.expovariate(r.rate_per_s)
        elif r.kind in ("stall", "drop"):
            windows += [(r.at_s, r.at_s + r.duration_ms / 1000, w, r.kind) for w in targets]
        elif r.kind == "crash":
            for w in targets:
                events.append(Event(r.at_s, w, "kill"))
                if r.restart_after_s is not None:
                    events.append(Event(r.at_s + r.restart_after_s, w, "restart"))
    events += _spec_changes(plan, windows, n_workers)
    return sorted(events, key=lambda e: (e.t_s, e.worker, e.action))


def _spec_changes(plan: FaultPlan, windows: list[tuple[float, float, int, str]], n_workers: int) -> list[Event]:
    """At each window boundary, the worker's whole spec: its constant part plus active windows."""
    out: list[Event] = []
    for w in range(n_workers):
        mine = [x for x in windows if x[2] == w]
        base = worker_spec(plan, w)
        for t in sorted({x[0] for x in mine} | {x[1] for x in mine}):
            active = [x[3] for x in mine if x[0] <= t < x[1]]
            parts = ([] if base == "none" else [base]) + _merge_slow(active)
            out.append(Event(t, w, "spec", "+".join(parts) or "none"))
    return out


def _merge_slow(active: list[str]) -> list[str]:
    """Overlapping contention windows multiply; other parts are kept once each."""
    factor = 1.0
    rest: list[str] = []
    for part in active:
        if part.startswith("slow:factor="):
            factor *= float(part.split("=", 1)[1])
        elif part not in rest:
            rest.append(part)
    return rest + ([f"slow:factor={factor:g}"] if factor > 1 else [])
