"""``parm fault`` against real worker servers: the secret is proved when known, and every failure
(no secret, a wrong one, nobody listening, a bad spec) is one line and a non-zero exit."""
from __future__ import annotations


import pytest

from parm.cli import main
from parm.fault_command import FaultCommandError, Target, set_fault
from tests.conftest import worker_servers
from workers.cluster import free_port

SECRET = "cluster-secret"


async def test_the_fault_is_set_with_the_secret_and_refused_without_it() -> None:
    async with worker_servers(["builtin:linear"], secret=SECRET) as ws:
        port = ws[0].port
        assert await set_fault(Target("127.0.0.1", port, SECRET, "w"), "stall") == "stall"
        assert ws[0].faults.spec == "stall"
        with pytest.raises(FaultCommandError, match="requires its cluster's secret.*--cluster STATE_FILE"):
            await set_fault(Target("127.0.0.1", port, None, "w"), "none")
        with pytest.raises(FaultCommandError, match="closed the connection during the handshake"):
            await set_fault(Target("127.0.0.1", port, "wrong", "w"), "none")
        assert await set_fault(Target("127.0.0.1", port, SECRET, "w"), "none") == "none"


async def test_a_worker_without_a_secret_takes_the_fault_as_before() -> None:
    async with worker_servers(["builtin:linear"]) as ws:
        assert await set_fault(Target("127.0.0.1", ws[0].port, None, "w"), "delay:ms=5") == "delay:ms=5"


@pytest.mark.parametrize("argv, status, message", [
    (["127.0.0.1:{port}", "stall"], 1, "parm fault: cannot reach worker 127.0.0.1:{port}: connection refused"),
    (["127.0.0.1:{port}", "stal"], 2, "parm fault: unknown fault 'stal'"),
    (["data:0", "stall"], 1, "parm fault: no running parm up cluster has a worker data:0"),
])
def test_failures_are_one_line_and_a_non_zero_exit(argv, status, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARM_STATE_DIR", str(tmp_path))
    port = free_port()  # nothing listens there
    assert main(["fault", *(a.format(port=port) for a in argv)]) == status
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(message.format(port=port)) and out.err.count("\n") == 1, out.err
