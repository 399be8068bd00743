"""The event loop a process serves on: uvloop (libuv: less CPU per request) when installed, or asyncio's
own. Shared by `parm worker` and `parm serve` (parm.commands), which both take ``--event-loop``."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A new-loop factory for asyncio.Runner; None: asyncio's own loop. ValueError for an unknown kind,
    or uvloop asked for by name and not installed."""
    if kind not in EVENT_LOOPS:
        raise ValueError(f"--event-loop must be one of {EVENT_LOOPS}, got {kind!r}")
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop
