"""Fault injection for workers: the stragglers and failures that parity models mask.

Data flow: frontend -> worker_client -> [wire] -> workers.server (**faults**, per infer request) -> model.
Only ``infer`` requests are faulted; ``ping`` and ``fault`` always answer, so a test harness can
always heal a worker with ``fault:none``.

Spec grammar (whitespace-free; several faults joined with ``+``)::

    spec   := "none" | fault ("+" fault)*
    fault  := NAME [":" key=value ("," key=value)*]
    delay  : ms=F | mean_ms=F (aliases, required), dist=fixed|uniform|exp (default fixed), p=F
             fixed sleeps F ms; uniform draws from [0, 2F]; exp has mean F
    stall  : [p=F]     hang until the spec is next changed, then proceed normally
    error  : [p=F]     reply with an error message instead of a result
    drop   : [p=F]     close the request's connection without replying
    crash  : [after=N] serve N more requests normally, then exit the process at once (default 0)

``p`` (default 1) is the probability that the fault applies to a given request. Example:
``delay:mean_ms=20,dist=exp,p=0.1+error:p=0.01``. Parse errors raise ValueError naming the part.
A spec change also releases requests waiting in a delay, not only stalled ones.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

DISTS = ("fixed", "uniform", "exp")
# Fault name -> keys it accepts.
FAULT_KEYS: dict[str, frozenset[str]] = {
    "delay": frozenset({"ms", "mean_ms", "dist", "p"}),
    "stall": frozenset({"p"}),
    "error": frozenset({"p"}),
    "drop": frozenset({"p"}),
    "crash": frozenset({"after"}),
}


@dataclass(frozen=True)
class Fault:
    """One parsed fault. ``mean_ms``/``dist`` matter for delay only, ``after`` for crash only."""

    kind: str
    p: float = 1.0
    mean_ms: float = 0.0
    dist: str = "fixed"
    after: int = 0


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
    name, _, rest = part.partition(":")
    if name not in FAULT_KEYS:
        raise ValueError(f"unknown fault {name!r} in {part!r}; known: none, {', '.join(FAULT_KEYS)}")
    params: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in FAULT_KEYS[name]:
            raise ValueError(f"bad parameter {item!r} in fault {part!r}; {name} accepts {sorted(FAULT_KEYS[name])}")
        params[key] = value
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
        self._changed = asyncio.Event()  # set (and replaced) whenever the spec changes
        self._spec = "none"
        self._faults: tuple[Fault, ...] = ()
        self._served = 0
        self.set(spec)

    @property
    def spec(self) -> str:
        return self._spec

    def set(self, spec: str) -> None:
        """Install a new spec (ValueError keeps the old one) and release stalled/delayed requests."""
        faults = parse(spec)
        self._spec, self._faults, self._served = (spec.strip() or "none"), faults, 0
        self._changed.set()
        self._changed = asyncio.Event()

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
        changed = self._changed
        if action.stall:
            await changed.wait()
            return  # the spec changed: proceed normally, ignoring the rest of the old action
        if action.delay_s > 0 and await _wait(changed, action.delay_s):
            return
        if action.drop:
            raise InjectedDrop("fault injection: connection dropped")
        if action.error:
            raise InjectedError(f"fault injection: error (spec {self._spec!r})")


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``event`` was set first."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
