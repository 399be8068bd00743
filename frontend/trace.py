"""Per-group event traces, to explain a slow answer query by query (``parm serve --trace-file``).

Each group records what happened to it, in order: a query joined, a request went to a worker (with
the requests that worker held), an output came back, the parity query went out and came back, a copy
was sent, the group closed, a decode waited, a query was answered (and which way). Finished groups
are kept in memory (bounded; the oldest are dropped first) and written as JSON lines at shutdown.
Off by default: the serving path then pays one ``is None`` check per event.
"""
from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from frontend import clock
from frontend.worker_api import Worker

MAX_GROUPS = 1_000_000  # ~0.5-1 KB each: a bound, so a forgotten --trace-file cannot exhaust memory

# event kinds: join (a query entered slot s), send / out / fail (slot s's request to a worker, its
# output, its error), psend / pout (a parity query), copy / cout (a fallback or hedged copy), close
# (the group has all its queries), wait (a decode deferred until the time given), answer (slot s
# answered, by the path given, frontend.query.PATHS)
KINDS = ("join", "send", "out", "fail", "psend", "pout", "copy", "cout", "close", "wait", "answer")


def label(worker: Worker) -> str:
    """A worker as the trace names it: host:port (a V2 worker's client also has host and port)."""
    return f"{worker.host}:{worker.port}"


class GroupTrace:
    """The events of one group: (loop time s, kind, slot or -1, worker label or path or None, a number or None)."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[tuple[float, str, int, str | None, float | None]] = []

    def add(self, kind: str, slot: int = -1, what: str | None = None, number: float | None = None) -> None:
        self.events.append((clock.now(), kind, slot, what, number))

    def sent(self, kind: str, slot: int, worker: Worker, ahead: int) -> None:
        """A request for ``slot`` went to ``worker``, which held ``ahead`` requests then."""
        self.events.append((clock.now(), kind, slot, label(worker), ahead))


class TraceSink:
    """Finished groups' traces, written to ``path`` as JSON lines: a header (the loop clock and wall
    clock at one instant, so times can be matched with other records), then one group per line.

    Each group is kept as its JSON line, not as its event objects: a million lists and tuples kept
    alive made every full garbage collection of the frontend longer (its event loop stalled ~90 ms
    every ~50 s in a 340-s run, which the trace itself then showed as the tail)."""

    def __init__(self, path: str | Path, max_groups: int = MAX_GROUPS) -> None:
        self.path = Path(path)
        self.groups: deque[str] = deque(maxlen=max_groups)
        self.kept = 0

    def keep(self, trace: GroupTrace) -> None:
        self.groups.append(json.dumps([[round(t, 6), k, s, w, n] for t, k, s, w, n in trace.events]))
        self.kept += 1

    def write(self, clock_s: float, wall_s: float) -> Path:
        """Write every kept group; ``clock_s`` and ``wall_s``: the loop's clock and the wall clock at one
        instant (blocking: call it off the event loop, as Service.stop does)."""
        header = {"clock_s": clock_s, "wall_s": wall_s, "groups": len(self.groups),
                  "dropped": self.kept - len(self.groups)}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(header) + "\n")
            for line in list(self.groups):
                f.write(line + "\n")
        tmp.replace(self.path)  # a reader never sees half a file
        return self.path


def read(path: str | Path) -> tuple[dict[str, Any], Iterator[list[list[Any]]]]:
    """(header, groups) of a trace file; each group a list of [t, kind, slot, what, number] events."""
    f = Path(path).open()
    header = json.loads(f.readline())

    def groups() -> Iterator[list[list[Any]]]:
        with f:
            for line in f:
                yield json.loads(line)
    return header, groups()
