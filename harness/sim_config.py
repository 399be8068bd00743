"""Settings of one simulated run (``parm simulate``) and the service-time distributions workers draw
from: fixed, exponential, lognormal, or empirical samples measured on real workers.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.plan import FaultPlan

MODES = ("none", "equal", "hedged", "coded")
BLOCK = 8192  # service times are drawn in blocks: one numpy call per block, not per request


class SimConfigError(ValueError):
    """A simulator setting is invalid; the message names it."""


@dataclass
class ServiceDist:
    """Per-request service time in seconds. ``spec`` is ``fixed:ms=5``, ``exp:mean_ms=5``,
    ``lognormal:median_ms=5,sigma=0.5`` or ``file:PATH`` (JSON list of ms, or {"service_ms": [...]})."""

    spec: str = "fixed:ms=5"
    kind: str = field(init=False, default="fixed")
    params: dict[str, float] = field(init=False, default_factory=dict)
    samples_s: np.ndarray | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        kind, _, rest = self.spec.partition(":")
        self.kind = kind
        if kind == "file":
            self.samples_s = _load_samples(rest)
            return
        try:
            self.params = {k: float(v) for k, v in (item.split("=", 1) for item in filter(None, rest.split(",")))}
        except ValueError as exc:
            raise SimConfigError(f"service {self.spec!r}: parameters are key=number pairs") from exc
        need = {"fixed": {"ms"}, "exp": {"mean_ms"}, "lognormal": {"median_ms", "sigma"}}.get(kind)
        if need is None:
            raise SimConfigError(f"service {self.spec!r}: kind must be fixed, exp, lognormal or file")
        if set(self.params) != need or any(v < 0 for v in self.params.values()):
            raise SimConfigError(f"service {self.spec!r}: {kind} takes exactly {sorted(need)}, each >= 0")

    @property
    def mean_s(self) -> float:
        if self.kind == "file":
            assert self.samples_s is not None
            return float(self.samples_s.mean())
        if self.kind == "fixed":
            return self.params["ms"] / 1000
        if self.kind == "exp":
            return self.params["mean_ms"] / 1000
        return self.params["median_ms"] / 1000 * math.exp(self.params["sigma"] ** 2 / 2)

    def draw(self, rng: np.random.Generator, n: int = BLOCK) -> np.ndarray:
        """``n`` service times in seconds."""
        if self.kind == "fixed":
            return np.full(n, self.params["ms"] / 1000)
        if self.kind == "exp":
            return rng.exponential(self.params["mean_ms"] / 1000, n)
        if self.kind == "lognormal":
            return rng.lognormal(math.log(max(self.params["median_ms"], 1e-9) / 1000), self.params["sigma"], n)
        assert self.samples_s is not None
        return rng.choice(self.samples_s, n)


def _load_samples(path: str) -> np.ndarray:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SimConfigError(f"service file {path}: {exc}") from exc
    values = raw.get("service_ms") if isinstance(raw, dict) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) and v >= 0 for v in values):
        raise SimConfigError(f"service file {path}: needs a non-empty list of ms (or {{'service_ms': [...]}})")
    return np.asarray(values, float) / 1000


@dataclass
class SimConfig:
    """One run. ``workers`` = n data workers; coded adds n/k parity, equal and hedged n/k replicas."""

    mode: str = "coded"
    workers: int = 12
    k: int = 2
    rate: float = 1000.0                 # queries/s (Poisson, or evenly spaced with arrivals="uniform")
    duration_s: float = 5.0              # arrivals stop here; the run continues until every query resolves
    count: int | None = None             # a fixed number of queries instead of a duration
    arrivals: str = "poisson"            # poisson | uniform
    service: str = "fixed:ms=5"
    plan: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0
    deadline_ms: float = 60_000.0
    hedge_delay_ms: float | None = None  # None: the p95 of recent latencies (frontend.hedging)
    hedge_percentile: float = 95.0
    group_timeout_ms: float = 20.0
    r: int = 1                           # parity queries per group (coded): up to r missing outputs decoded
    decode_policy: str | None = None     # as FrontendConfig: adaptive | eager | grace (None: the frontend's default)
    decode_grace_ms: float = 0.0
    decode_quantile: float = 95.0
    decode_slack: float = 1.25
    hedge_fallback: bool = True          # coded: copy an overdue query its group cannot decode (frontend.fallback)
    frontend_ms: float = 0.0             # constant per-query frontend cost, paid before dispatch
    retry_backoff_ms: float = 5.0        # FrontendConfig.retry_backoff_s: re-send after backoff * 2**attempt
    health_probes: bool = True           # the clients' real probe loop (one inference per interval per worker)
    health_interval_s: float = 1.0
    health_timeout_s: float = 1.0
    max_batch: int = 1
    batch_cost: float = 0.0              # a batch of b costs service * (1 + batch_cost * (b - 1))
    cancel_at_worker: bool = False       # True: cancelled requests leave the worker's queue (the real worker keeps them)
    hold_load_until_done: bool = True    # a cancelled request counts as in flight until its worker is done (real frontend)

    def __post_init__(self) -> None:
        checks = [(self.mode in MODES, f"mode must be one of {MODES}"), (self.workers >= 1, "workers must be >= 1"),
                  (self.k >= 1, "k must be >= 1"), (self.rate > 0, "rate must be > 0"),
                  (self.duration_s > 0 or self.count, "duration_s must be > 0 (or set count)"),
                  (self.arrivals in ("poisson", "uniform"), "arrivals must be poisson or uniform"),
                  (self.max_batch >= 1, "max_batch must be >= 1"), (self.deadline_ms > self.frontend_ms, "deadline_ms must exceed frontend_ms"),
                  (min(self.frontend_ms, self.retry_backoff_ms, self.decode_grace_ms, self.batch_cost) >= 0,
                   "times must be >= 0"),
                  (min(self.group_timeout_ms, self.health_interval_s, self.health_timeout_s) > 0,
                   "group_timeout_ms and health times must be > 0"),
                  (self.r >= 1, "r must be >= 1"),
                  (self.mode != "coded" or self.k >= 2, "coded mode needs k >= 2"),
                  (self.mode not in ("equal", "hedged", "coded") or self.extra_workers >= 1,
                   "equal, hedged and coded modes need workers >= k (n/k extra workers)")]
        for ok, message in checks:
            if not ok:
                raise SimConfigError(message)
        self.dist = ServiceDist(self.service)

    @property
    def extra_workers(self) -> int:
        """Parity workers (coded) or extra replicas (equal, hedged): n/k, as in ParM's setups."""
        return self.workers // self.k

    @property
    def plan_workers(self) -> int:
        """Workers the fault plan is expanded for, in every mode, so all modes share one trace."""
        return self.workers + self.extra_workers

    @property
    def arrival_window_s(self) -> float:
        return self.count / self.rate if self.count else self.duration_s

    def settings(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "plan"}
        out["plan"] = self.plan.describe()
        out["mean_service_ms"] = self.dist.mean_s * 1000
        out["load"] = self.rate * self.dist.mean_s / self.workers  # fraction of the n data workers' capacity
        return out
