"""Where benchmark scripts put their figures: one JSON file per run, its folder created on demand.

Imported by the scripts in this folder (each runs as ``python benchmarks/<script>.py``, so this
folder is on sys.path)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: str | Path, report: Any, indent: int = 2) -> Path:
    """Write ``report`` to ``path`` as JSON (trailing newline), creating missing folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent) + "\n")
    return path
