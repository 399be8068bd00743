"""Python API of the ParM serving simulator: ``simulate(config) -> dict`` for one mode and
``simulate_modes`` for several under the same arrivals and fault trace. Used by ``parm simulate``
(harness.sim_cli) and by benchmarks that set simulated numbers beside measured ones.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from harness.plan import FaultPlan, parse_plan
from harness.sim_config import MODES, SimConfig, SimConfigError
from harness.sim_engine import Sim
from harness.sim_metrics import summarize, table

__all__ = ["MODES", "SimConfig", "SimConfigError", "run_raw", "simulate", "simulate_modes", "table"]


def _as_config(config: SimConfig | dict[str, Any]) -> SimConfig:
    if isinstance(config, SimConfig):
        return config
    fields = dict(config)
    plan = fields.get("plan")
    if isinstance(plan, dict):
        fields["plan"] = parse_plan(plan)
    elif plan is None:
        fields["plan"] = FaultPlan()
    return SimConfig(**fields)


def run_raw(config: SimConfig | dict[str, Any]) -> dict[str, Any]:
    """Per-query arrays (arrival, state, done time, degraded, first worker, answers) and counters."""
    return Sim(_as_config(config)).run()


def simulate(config: SimConfig | dict[str, Any]) -> dict[str, Any]:
    """Run one mode; returns its metrics (latencies in ms), the settings and the plan as run.

    ``config`` is a SimConfig or a dict of its fields (``plan`` may be a plan dict)."""
    cfg = _as_config(config)
    t0 = time.perf_counter()
    out = summarize(Sim(cfg).run())
    out["mode"] = cfg.mode
    out["wall_s"] = time.perf_counter() - t0
    out["settings"] = cfg.settings()
    return out


def simulate_modes(config: SimConfig | dict[str, Any], modes: Iterable[str] = MODES) -> list[dict[str, Any]]:
    """Each mode with otherwise identical settings: same seed, so the same arrivals and fault trace."""
    cfg = _as_config(config)
    return [simulate(dataclasses.replace(cfg, mode=m)) for m in modes]
