"""CPU time of the Ray Serve processes of one application, found by their process titles
(``ray::ServeReplica:APP:DEPLOYMENT``, ``ray::ProxyActor``): what the benchmark charges per query."""
from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def serve_pids(app: str) -> dict[str, list[int]]:
    """{"ingress"|"data"|"parity"|"proxy": pids}, from /proc (Linux)."""
    kinds = {f"ServeReplica:{app}:parm-ingress": "ingress", f"ServeReplica:{app}:parm-data": "data",
             f"ServeReplica:{app}:parm-parity": "parity", "ProxyActor": "proxy"}
    out: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        for needle, kind in kinds.items():
            if title.startswith("ray::") and needle in title:
                out.setdefault(kind, []).append(int(entry.name))
    return out


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds per kind, summed over its processes (gone ones count 0)."""
    out: dict[str, float] = {}
    for kind, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        out[kind] = total
    return out
