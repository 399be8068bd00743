"""The state file of a parm up cluster: private, found by worker address, ignored once its parm up is gone."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from parm import cluster_state
from parm.cluster_state import ClusterState, WorkerEntry
from parm.fault_command import FaultCommandError, resolve_target


def a_cluster(port: int, secret: str = "s3cret", pid: int | None = None) -> ClusterState:
    workers = [WorkerEntry("data", 0, f"127.0.0.1:{port}", "builtin:linear"),
               WorkerEntry("data", 1, f"127.0.0.1:{port + 1}", "builtin:linear"),
               WorkerEntry("parity", 0, f"127.0.0.1:{port + 2}", "builtin:linear:parity_k=2")]
    return ClusterState("http://127.0.0.1:8080", secret, pid or os.getpid(), workers)


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> object:
    folder = tmp_path / "state"
    monkeypatch.setenv(cluster_state.STATE_DIR_ENV, str(folder))
    monkeypatch.delenv("PARM_WORKER_SECRET", raising=False)
    return folder


def test_the_state_file_is_private_and_reads_back(state_dir) -> None:
    path = cluster_state.write(cluster_state.default_path(8080), a_cluster(9001))
    assert path == state_dir / "cluster-8080.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    state = cluster_state.load(path)
    assert state == a_cluster(9001)
    assert state.find("localhost:9002") == state.workers[1] and state.find("parity:0") == state.workers[2]
    assert state.find("127.0.0.1:9999") is None
    cluster_state.remove(path)
    assert not path.exists()


def test_a_folder_others_can_read_is_refused(state_dir) -> None:
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)
    with pytest.raises(cluster_state.StateError, match="private"):
        cluster_state.write(state_dir / "cluster-1.json", a_cluster(9001))
    # a path the user chose (parm up --state-file ./cluster.json) gets a private file in any folder
    chosen = cluster_state.write(state_dir / "mine.json", a_cluster(9001), private_folder=False)
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o600 and cluster_state.load(chosen).secret == "s3cret"


def test_parm_fault_finds_the_secret_of_a_running_cluster_only(state_dir, tmp_path) -> None:
    cluster_state.write(state_dir / "cluster-8080.json", a_cluster(9001, "live"))
    cluster_state.write(state_dir / "cluster-8090.json", a_cluster(9101, "dead", pid=_exited_pid()))  # SIGKILLed
    target = resolve_target("127.0.0.1:9002", None, None)
    assert (target.host, target.port, target.secret) == ("127.0.0.1", 9002, "live")
    assert resolve_target("data:1", None, None).port == 9002
    assert resolve_target("127.0.0.1:9102", None, None).secret is None  # its parm up is gone
    secret_file = tmp_path / "secret"
    secret_file.write_text("given\n")
    assert resolve_target("127.0.0.1:9002", None, str(secret_file)).secret == "given"  # an explicit secret wins


def test_parm_fault_by_role_needs_one_cluster_or_a_state_file(state_dir) -> None:
    with pytest.raises(FaultCommandError, match="no running parm up cluster has a worker data:0"):
        resolve_target("data:0", None, None)
    cluster_state.write(state_dir / "cluster-8080.json", a_cluster(9001, "one"))
    cluster_state.write(state_dir / "cluster-8081.json", a_cluster(9101, "two"))
    with pytest.raises(FaultCommandError, match="2 running parm up clusters"):
        resolve_target("data:0", None, None)
    assert resolve_target("data:0", str(state_dir / "cluster-8081.json"), None).secret == "two"
    with pytest.raises(FaultCommandError, match="lists no worker data:5; its workers: data:0="):
        resolve_target("data:5", str(state_dir / "cluster-8081.json"), None)


def _exited_pid() -> int:
    """The pid of a process that has exited: it runs no cluster any more."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
