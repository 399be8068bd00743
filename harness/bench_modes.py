"""How each ``parm bench`` serving mode maps onto the shared worker pool: which processes the pool
holds, which of them a mode's frontend uses as its extra workers, where the fault plan's worker
numbers land, and the frontend's flags.

The pool is N data workers, then E extra replicas (the base model), then E parity workers (the
parity model; started only when coded mode runs). equal and hedged use the replicas as extra data
workers; coded uses the parity workers; berrut is the frontend's coded mode with the training-free
Berrut code, whose parity queries run on the unmodified base model, so it uses the *replicas* as
its parity workers: no process of its own, and the plan's faults land on the very workers that
equal and hedged get. parm is coded mode as ParM ran it (decode at once, no fallback hedging) on
the same parity workers, so the decode policy and the fallback are measured side by side.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bench imports this module: type names only
    from harness.bench import BenchConfig
    from harness.deploy import BenchCluster, BenchWorkerSpec

ALL_MODES = ("none", "equal", "hedged", "coded", "parm", "berrut")
EXTRA_ROLE = {"equal": "replica", "hedged": "replica", "coded": "parity", "parm": "parity", "berrut": "replica"}
PARITY_MODES = ("coded", "parm", "berrut")  # the frontend runs --mode coded: its extra workers are parity workers
LEARNED_MODES = ("coded", "parm")  # modes whose parity workers run the parity model


def extra_role(mode: str) -> str | None:
    """The pool role a mode takes its extra workers from; None for none mode (data workers only)."""
    return EXTRA_ROLE.get(mode)


def _seeded(service_time: str, index: int) -> str:
    """Random service times get a per-worker seed, so every mode draws the same sequences."""
    if service_time.split(":", 1)[0] in ("exp", "lognormal") and "seed=" not in service_time:
        return f"{service_time},seed={index + 1}"
    return service_time


def worker_specs(cfg: BenchConfig) -> list[BenchWorkerSpec]:
    """One pool for every mode: N data workers, E extra replicas (equal, hedged, berrut), and E
    parity workers when coded mode runs (they are last, so leaving them out moves no index)."""
    from harness.deploy import BenchWorkerSpec
    roles = [("data", cfg.model)] * cfg.n_data + [("replica", cfg.model)] * cfg.n_extra
    parity = cfg.parity_spec  # None when coded mode does not run
    if parity is not None:
        roles += [("parity", parity)] * cfg.n_extra
    return [BenchWorkerSpec(role, model, max_batch=cfg.max_batch, threads=1,
                            service_time=_charged(_seeded(cfg.service_time, i), cfg.parity_cost if role == "parity" else 1.0))
            for i, (role, model) in enumerate(roles)]


def _charged(service_time: str, cost: float) -> str:
    """A parity model that costs ``cost`` base queries sleeps that much longer: equal resources stay equal."""
    if cost == 1.0:
        return service_time
    if service_time.startswith("file:"):
        raise ValueError("--parity-cost needs a fixed:, exp: or lognormal: service time, not file:")
    return f"{service_time},scale={cost:g}"


def plan_targets(cfg: BenchConfig, mode: str) -> list[int]:
    """Plan worker i -> index in the pool: data workers, then this mode's extra workers (plan
    worker N + j is replica j for equal, hedged and berrut, parity worker j for coded)."""
    extra_base = {"replica": cfg.n_data, "parity": cfg.n_data + cfg.n_extra}.get(extra_role(mode) or "")
    extras = [] if extra_base is None else list(range(extra_base, extra_base + cfg.n_extra))
    return list(range(cfg.n_data)) + extras


def healthy_needed(cfg: BenchConfig, mode: str) -> tuple[int, int]:
    """(data, parity) workers the mode's frontend must see healthy before the load starts."""
    if mode in PARITY_MODES:
        return cfg.n_data, cfg.n_extra
    return cfg.n_data + (cfg.n_extra if extra_role(mode) else 0), 0


def frontend_args(cfg: BenchConfig, mode: str, cluster: BenchCluster, hedge_ms: float | None = None) -> list[str]:
    """``parm serve`` flags for one mode; berrut runs as ``--mode coded --code berrut --r R``."""
    def fmt(role: str) -> str:
        return ",".join(f"{h}:{p}" for h, p in cluster.addresses(role))
    if mode == "berrut":
        args = ["--mode", "coded", "--code", "berrut", "--r", str(cfg.berrut_r)]
    elif mode == "parm":
        args = ["--mode", "coded", "--code", cfg.code, "--decode-policy", "eager", "--no-hedge-fallback"]
    else:
        args = ["--mode", mode, "--code", cfg.code]
    args += ["--k", str(cfg.k), "--data", fmt("data"),
             "--deadline-ms", f"{cfg.deadline_ms:g}", "--group-timeout-ms", f"{cfg.group_timeout_ms:g}",
             "--max-pending", str(cfg.max_pending)]
    if mode != "parm" and cfg.decode_grace_ms > 0:
        args += ["--decode-policy", "grace", "--decode-grace-ms", f"{cfg.decode_grace_ms:g}"]
    role = extra_role(mode)
    if role:  # equal and hedged take their extra replicas through --parity (config.all_data_workers)
        args += ["--parity", fmt(role)]
    if mode == "hedged" and hedge_ms is not None:
        args += ["--hedge-delay-ms", f"{hedge_ms:.3f}"]
    return args


def check(cfg: BenchConfig) -> None:
    """ValueError, before anything starts, for settings no frontend of these modes would accept."""
    bad = [m for m in cfg.modes if m not in ALL_MODES]
    if bad:
        raise ValueError(f"unknown bench modes {bad}; known: {', '.join(ALL_MODES)}")
    if cfg.parity_cost <= 0:
        raise ValueError(f"--parity-cost must be > 0, got {cfg.parity_cost}")
    if cfg.parity_cost != 1.0 and cfg.service_time.startswith("file:"):
        raise ValueError("--parity-cost needs a fixed:, exp: or lognormal: service time, not file:")
    if cfg.k < 2 and any(m in PARITY_MODES for m in cfg.modes):
        raise ValueError(f"coded and berrut modes need k >= 2, got k={cfg.k}")
    if "berrut" in cfg.modes and not 1 <= cfg.berrut_r <= cfg.n_extra:
        # each of a group's r parity queries goes to its own extra worker (frontend/dispatcher.py)
        raise ValueError(f"--berrut-r must be in 1..{cfg.n_extra} (the N/k = {cfg.n_data}/{cfg.k} extra replicas), "
                         f"got {cfg.berrut_r}")
