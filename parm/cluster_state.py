"""The state file of a running ``parm up`` cluster: its frontend URL, each worker's role and
address, and the workers' secret, so ``parm fault ADDRESS SPEC`` can authenticate to a worker of
a local cluster without the user ever handling the secret.

Written 0600 in a per-user folder (0700): ``$PARM_STATE_DIR``, else ``$XDG_RUNTIME_DIR/parm``, else
``<tmp>/parm-<uid>``; named ``cluster-<frontend port>.json``; removed when ``parm up`` exits. A file
whose ``parm up`` died without removing it (SIGKILL) is ignored: its pid no longer runs.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "PARM_STATE_DIR"
LOOPBACK = {"localhost": "127.0.0.1", "::1": "127.0.0.1"}


class StateError(ValueError):
    """A state file cannot be written or read, or does not say what is asked of it."""


@dataclass
class WorkerEntry:
    role: str      # "data" or "parity" (coded) / extra replicas (equal, hedged)
    index: int     # position among the workers of its role, as `parm fault data:INDEX` names it
    address: str   # HOST:PORT
    model: str


@dataclass
class ClusterState:
    frontend: str  # http://HOST:PORT
    secret: str
    pid: int = field(default_factory=os.getpid)
    workers: list[WorkerEntry] = field(default_factory=list)

    def find(self, address: str) -> WorkerEntry | None:
        """The worker at ``address`` (HOST:PORT; localhost counts as 127.0.0.1), or at ``ROLE:INDEX``."""
        for w in self.workers:
            if _same_address(w.address, address) or address == f"{w.role}:{w.index}":
                return w
        return None


def state_dir() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "parm"
    return Path(tempfile.gettempdir()) / f"parm-{os.getuid()}"


def default_path(port: int) -> Path:
    return state_dir() / f"cluster-{port}.json"


def write(path: str | Path, state: ClusterState, private_folder: bool = True) -> Path:
    """Write ``state`` atomically, readable by its owner only (it holds the secret). The default
    folder must be private too (no one else may plant or list files there); a path the user chose
    (``private_folder=False``, e.g. ./cluster.json) only gets the file's own 0600."""
    path = Path(path)
    try:
        if private_folder:
            _private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode: start from none
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        raise StateError(f"cannot write the cluster state file {path}: {exc}") from exc
    return path


def remove(path: str | Path) -> None:
    Path(path).unlink(missing_ok=True)


def load(path: str | Path) -> ClusterState:
    try:
        raw: Any = json.loads(Path(path).read_text())
        workers = [WorkerEntry(**w) for w in raw.pop("workers")]
        return ClusterState(**raw, workers=workers)
    except OSError as exc:
        raise StateError(f"cannot read the cluster state file {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateError(f"{path} is not a parm up state file: {exc}") from exc


def live_states() -> list[tuple[Path, ClusterState]]:
    """The state files of the local clusters still running, newest first; unreadable ones skipped."""
    folder = state_dir()
    found: list[tuple[float, Path, ClusterState]] = []
    for path in folder.glob("cluster-*.json") if folder.is_dir() else ():
        try:
            state = load(path)
            mtime = path.stat().st_mtime
        except (StateError, OSError):
            continue
        if _running(state.pid):
            found.append((mtime, path, state))
    return [(path, state) for _, path, state in sorted(found, key=lambda t: -t[0])]


def _private_dir(folder: Path) -> None:
    """Create ``folder`` 0700, and refuse one that others could plant files in or read."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OSError(f"{folder} must be owned by you and private (mode 0700)")


def _same_address(a: str, b: str) -> bool:
    def norm(text: str) -> tuple[str, str]:
        host, _, port = text.rpartition(":")
        host = host.strip("[]")
        return LOOPBACK.get(host, host), port
    return norm(a) == norm(b)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not our cluster's parent
        return False
    return True
