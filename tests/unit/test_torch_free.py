"""The serving path runs without torch: importing the frontend's serving modules and coders, or
running ``parm --help``, in a fresh interpreter leaves 'torch' out of sys.modules.

Each check runs in a subprocess (this test process has torch loaded by other tests). A meta-path
hook in the child records the stack of the first ``import torch``, so a failure names the chain.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVING = ("frontend.app", "frontend.service", "frontend.handlers", "frontend.pool", "frontend.dispatcher",
           "frontend.group", "coders")
MARK = "TORCH_FREE_RESULT "

# Prepended to every child program: remember where torch was first imported from.
HOOK = """
import json, sys, traceback
class _Spy:
    stack = None
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "torch" and cls.stack is None:
            cls.stack = "".join(traceback.format_stack(limit=40))
        return None
sys.meta_path.insert(0, _Spy)
def _report(**extra):
    print(%r + json.dumps(dict(torch="torch" in sys.modules, stack=_Spy.stack, **extra)), flush=True)
""" % MARK


def run_child(body: str) -> dict:
    """Run HOOK + body in a fresh interpreter at the repo root; the body calls _report()."""
    proc = subprocess.run([sys.executable, "-c", HOOK + body], cwd=ROOT, capture_output=True, text=True, timeout=180)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    assert proc.returncode == 0 and lines, f"child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len(MARK):])


def cli_module() -> str:
    """The module behind the ``parm`` command: parm.cli once it exists, else frontend.cli."""
    if importlib.util.find_spec("parm") is not None and importlib.util.find_spec("parm.cli") is not None:
        return "parm.cli"
    return "frontend.cli"


def test_serving_modules_import_without_torch() -> None:
    result = run_child("import " + ", ".join(SERVING) + "\n_report()\n")
    assert not result["torch"], f"torch imported on the serving path:\n{result['stack']}"


def test_coders_encode_and_decode_numpy_without_torch() -> None:
    """Encode (the concat code's overlapping-window pooling too) and decode numpy without loading torch."""
    body = """
import numpy as np
from coders import make_code
for name, shape in (("sum", (10,)), ("concat", (1, 28, 28)), ("concat", (1, 29, 31)), ("berrut", (1, 28, 28))):
    code = make_code(name, 3, 2)
    parity = code.encode(np.random.default_rng(0).random((3, 2, *shape), dtype=np.float32))
    assert parity.shape[:2] == (2, 2), parity.shape
    outs = {s: np.ones((2, 10), np.float32) for s in (0, 3, 4)}
    assert sorted(code.decode(outs)) == [1, 2]
_report()
"""
    result = run_child(body)
    assert not result["torch"], f"torch imported by numpy coding:\n{result['stack']}"


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_cli_help_runs_without_torch(argv: list[str]) -> None:
    module = cli_module()
    body = f"""
import runpy
sys.argv = ["parm", *{argv!r}]
try:
    runpy.run_module({module!r}, run_name="__main__")
    code = 0
except SystemExit as e:  # --help exits
    code = e.code
_report(code=code)
"""
    result = run_child(body)
    assert result["code"] in (0, None), f"{module} {' '.join(argv)} exited {result['code']}"
    assert not result["torch"], f"{module} {' '.join(argv)} imported torch:\n{result['stack']}"
