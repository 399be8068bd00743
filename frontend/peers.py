"""Several frontend processes on one port (``parm serve --processes N``, started by parm.multiproc):
each also listens on a unix socket in a shared run folder, so whichever process a probe or a scrape
reaches answers for all of them: /stats summed, /ready only when every running process is, /metrics
with a ``process`` label. Used by frontend.handlers; each process groups only its own queries.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

LOCAL_QUERY = {"scope": "process"}  # ?scope=process: this process's own view (what the peers ask each other)
PEER_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class PeerReply:
    """One process's answer to a local-scope GET: status None = not running (no socket, refused),
    status 0 = running but did not answer in PEER_TIMEOUT_S."""

    index: int
    status: int | None
    body: bytes = b""


@dataclass(frozen=True)
class Peers:
    """Process ``index`` of ``count``, whose unix sockets are ``run_dir``/<i>.sock."""

    run_dir: Path
    index: int
    count: int

    def socket_path(self, i: int) -> Path:
        return self.run_dir / f"{i}.sock"

    async def gather(self, path: str) -> list[PeerReply]:
        """GET ``path`` (local scope) from every other process, concurrently."""
        others = [i for i in range(self.count) if i != self.index]
        return list(await asyncio.gather(*(self._get(i, path) for i in others)))

    async def _get(self, i: int, path: str) -> PeerReply:
        sock = self.socket_path(i)
        if not sock.exists():
            return PeerReply(i, None)
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)), timeout=timeout) as s:
                async with s.get(f"http://process-{i}{path}", params=LOCAL_QUERY) as resp:
                    return PeerReply(i, resp.status, await resp.read())
        except asyncio.TimeoutError:
            return PeerReply(i, 0)
        except (aiohttp.ClientConnectionError, OSError):  # restarting: the kernel routes nothing to it
            return PeerReply(i, None)


def merge_stats(own: dict[str, Any], index: int, replies: list[tuple[int, dict[str, Any] | None]]) -> dict[str, Any]:
    """Counters summed over the processes that answered; ``processes`` says which did."""
    views = [(index, own)] + [(i, s) for i, s in replies if s is not None]
    out: dict[str, Any] = {}
    for _, stats in views:
        for key, value in stats.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                # a longest-pause figure is the longest of any process; every other number is a count or a sum
                out[key] = max(out.get(key, value), value) if "_max_" in key else out.get(key, 0) + value
    out["processes"] = {"count": 1 + len(replies), "answered": sorted(i for i, _ in views)}
    return out


def merge_ready(own: dict[str, Any], index: int, replies: list[PeerReply], decode: Any) -> dict[str, Any]:
    """Ready when this process and every running peer is. A peer that is not running (being restarted)
    receives no connections, so it does not hold readiness back; one that does not answer does."""
    processes = [{"process": index, "ready": own["ready"], "reason": own.get("reason")}]
    for r in replies:
        if r.status is None:
            processes.append({"process": r.index, "ready": None, "reason": "not running (restarting)"})
        elif r.status == 0:
            processes.append({"process": r.index, "ready": False, "reason": f"no answer in {PEER_TIMEOUT_S:g} s"})
        else:
            state = decode(r.body)
            processes.append({"process": r.index, "ready": bool(state.get("ready")), "reason": state.get("reason")})
    ready = all(p["ready"] is not False for p in processes) and bool(own["ready"])
    reason = next((f"process {p['process']}: {p['reason']}" for p in processes if p["ready"] is False), None)
    return {**own, "ready": ready, "reason": reason, "processes": processes}


def merge_metrics(texts: dict[int, bytes]) -> bytes:
    """Prometheus text of each process -> one exposition, every sample labelled with its ``process``."""
    families: dict[str, Metric] = {}
    for index, text in sorted(texts.items()):
        with contextlib.suppress(ValueError):  # a peer's unparsable page is left out, not a 500 for the scrape
            for fam in text_string_to_metric_families(text.decode()):
                merged = families.get(fam.name)
                if merged is None:
                    merged = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                for sample in fam.samples:
                    merged.samples.append(sample._replace(labels={**sample.labels, "process": str(index)}))
    return generate_latest(_Families(list(families.values())))  # type: ignore[arg-type]


class _Families:
    """A registry-like holder of ready-made families, for generate_latest."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
