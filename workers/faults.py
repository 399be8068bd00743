"""Fault injection for workers: the stragglers and failures that parity models mask.

Data flow: frontend -> worker_client -> [wire] -> workers.server (**faults**, per infer request) -> model.
Only ``infer`` requests are faulted; ``ping`` and ``fault`` always answer, so a test harness can
always heal a worker with ``fault:none``.

Spec grammar (whitespace-free; several faults joined with ``+``)::

    spec   := "none" | fault ("+" fault)*
    fault  := NAME [":" key=value ("," key=value)*]
    delay  : ms=F | mean_ms=F (aliases, required), dist=fixed|uniform|exp (default fixed), p=F
             fixed sleeps F ms; uniform draws from [0, 2F]; exp has mean F
    stall  : [p=F]     hang until a spec without ``stall`` is set, then proceed normally
    slow   : factor=F  (F >= 1) every batch's service time is multiplied by F while the spec holds
             (read by the server when a batch starts; see workers.model.LoadedModel.run_batch)
    error  : [p=F]     reply with an error message instead of a result
    drop   : [p=F]     close the request's connection without replying
    crash  : [after=N] serve N more requests normally, then exit the process at once (default 0)

``p`` (default 1) is the probability that the fault applies to a given request. Example:
``delay:mean_ms=20,dist=exp,p=0.1+error:p=0.01``. Parse errors raise ValueError naming the part.
Spec changes are frequent in benchmarks (each contention window sets a new spec), so a change
releases stalled requests only when the new spec has no ``stall``; a request already in a
``delay`` always sleeps its whole sampled time.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

from workers.specs import parse_named

log = logging.getLogger(__name__)

DISTS = ("fixed", "uniform", "exp")
# Fault name -> keys it accepts.
FAULT_KEYS: dict[str, frozenset[str]] = {
    "delay": frozenset({"ms", "mean_ms", "dist", "p"}),
    "stall": frozenset({"p"}),
    "error": frozenset({"p"}),
    "drop": frozenset({"p"}),
    "crash": frozenset({"after"}),
    "slow": frozenset({"factor"}),
}


@dataclass(frozen=True)
class Fault:
    """One parsed fault. ``mean_ms``/``dist`` matter for delay only, ``after`` for crash only,
    ``factor`` for slow only."""

    kind: str
    p: float = 1.0
    mean_ms: float = 0.0
    dist: str = "fixed"
    after: int = 0
    factor: float = 1.0


@dataclass(frozen=True)
class Action:
    """What to do with one request, decided before it enters the batch queue."""

    delay_s: float = 0.0
    stall: bool = False
    error: bool = False
    drop: bool = False
    crash: bool = False


class InjectedError(Exception):
    """The request must be answered with an error reply (``error`` fault)."""


class InjectedDrop(Exception):
    """The request's connection must be closed without a reply (``drop`` fault)."""


def parse(spec: str) -> tuple[Fault, ...]:
    """Spec text -> faults; ``none`` (or empty) -> (). ValueError names the bad part."""
    text = spec.strip()
    if text in ("", "none"):
        return ()
    return tuple(_parse_one(part) for part in text.split("+"))


def _parse_one(part: str) -> Fault:
    name, params = parse_named(part, FAULT_KEYS, "fault")
    try:
        return _build(name, params)
    except ValueError as exc:
        raise ValueError(f"bad fault {part!r}: {exc}") from None


def _build(name: str, params: dict[str, str]) -> Fault:
    p = float(params.get("p", "1"))
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p} is not a probability")
    if name == "crash":
        after = int(params.get("after", "0"))
        if after < 0:
            raise ValueError("after must be >= 0")
        return Fault("crash", after=after)
    if name == "slow":
        return _build_slow(params)
    if name != "delay":
        return Fault(name, p=p)
    if ("ms" in params) == ("mean_ms" in params):
        raise ValueError("delay needs exactly one of ms= or mean_ms=")
    mean_ms = float(params.get("ms", params.get("mean_ms", "0")))
    dist = params.get("dist", "fixed")
    if mean_ms < 0 or mean_ms != mean_ms:  # also rejects NaN
        raise ValueError(f"delay of {mean_ms} ms is invalid")
    if dist not in DISTS:
        raise ValueError(f"dist={dist!r} unknown; use one of {', '.join(DISTS)}")
    return Fault("delay", p=p, mean_ms=mean_ms, dist=dist)


def _build_slow(params: dict[str, str]) -> Fault:
    if "factor" not in params:
        raise ValueError("slow needs factor=F")
    factor = float(params["factor"])
    if not factor >= 1.0:  # also rejects NaN
        raise ValueError(f"factor={factor} must be >= 1")
    return Fault("slow", factor=factor)


def slow_factor(faults: tuple[Fault, ...]) -> float:
    """The product of the spec's slow factors (1.0 when there is none)."""
    factor = 1.0
    for f in faults:
        if f.kind == "slow":
            factor *= f.factor
    return factor


def sample_delay_ms(fault: Fault, rng: random.Random) -> float:
    if fault.dist == "uniform":
        return rng.uniform(0.0, 2.0 * fault.mean_ms)
    if fault.dist == "exp" and fault.mean_ms > 0:
        return rng.expovariate(1.0 / fault.mean_ms)
    return fault.mean_ms


def decide(faults: tuple[Fault, ...], rng: random.Random, served: int) -> Action:
    """Pure decision for one request; ``served`` = requests already seen since the spec was set."""
    delay_ms, stall, error, drop, crash = 0.0, False, False, False, False
    for f in faults:
        if f.kind == "crash":
            crash = crash or served >= f.after
            continue
        if f.kind == "slow":  # applied per batch by the server; no draw, so delays keep their sequence
            continue
        if rng.random() >= f.p:  # draw even when p == 1 so sequences do not depend on p
            continue
        if f.kind == "delay":
            delay_ms += sample_delay_ms(f, rng)
        stall = stall or f.kind == "stall"
        error = error or f.kind == "error"
        drop = drop or f.kind == "drop"
    return Action(delay_ms / 1000.0, stall, error, drop, crash)


class FaultInjector:
    """Holds the current spec; ``before_request`` applies it to one infer request."""

    def __init__(self, spec: str = "none", rng: random.Random | None = None,
                 exit_fn: Callable[[int], object] = os._exit) -> None:
        self._rng = rng or random.Random()
        self._exit = exit_fn  # injectable so tests can observe a crash without dying
        self._unstall = asyncio.Event()  # set (and replaced) when a spec without stall is installed
        self._spec = "none"
        self._faults: tuple[Fault, ...] = ()
        self.slow_factor = 1.0  # service-time multiplier for batches started under this spec
        self._served = 0
        self.set(spec)

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def active(self) -> bool:
        """False under "none": no request needs ``before_request`` (the server's fast path)."""
        return bool(self._faults)

    def set(self, spec: str) -> None:
        """Install a new spec (ValueError keeps the old one). Stalled requests are released only
        if the new spec has no stall; requests in a delay keep sleeping their sampled time."""
        faults = parse(spec)
        self._spec, self._faults, self._served = (spec.strip() or "none"), faults, 0
        self.slow_factor = slow_factor(faults)
        if not any(f.kind == "stall" for f in faults):
            self._unstall.set()
            self._unstall = asyncio.Event()

    def next_action(self) -> Action:
        action = decide(self._faults, self._rng, self._served)
        self._served += 1
        return action

    async def before_request(self) -> None:
        """Apply the fault to one request: returns to proceed, raises InjectedError/InjectedDrop."""
        action = self.next_action()
        if action.crash:
            log.error("fault injection: crashing the worker process now (spec %r)", self._spec)
            self._exit(1)
            raise InjectedDrop("crashed")  # only reached when exit_fn is a test stub
        if action.stall:
            await self._unstall.wait()
            return  # the stall was lifted: proceed normally, ignoring the rest of the old action
        if action.delay_s > 0:
            await asyncio.sleep(action.delay_s)
        if action.drop:
            raise InjectedDrop("fault injection: connection dropped")
        if action.error:
            raise InjectedError(f"fault injection: error (spec {self._spec!r})")

