"""Bring your own model, end to end: a CNN this project does not define (written here), trained on the shipped
Fashion-MNIST slice and saved with torch.export; its parity model trained by ``parm train-parity`` (a real
process, from the base's weights); both served by ``parm up``; one data worker stalled by ``parm fault``.
Every degraded answer equals the offline decode computed with the user's own program."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from coders import make_code
from parity_models import checkpoint
from workers.cluster import free_port

pytestmark = pytest.mark.e2e
N_GROUPS = 40
CLI = [sys.executable, "-m", "parm.cli"]


class TwoConv(nn.Module):
    """The user's model: its own normalisation, two strided convolutions, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)   # (B, 8, 14, 14)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)  # (B, 16, 7, 7)
        self.head = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) pixels in [0, 1] -> (B, 10)
        x = (x - 0.286) / 0.353
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def train_and_export(data, path: Path) -> None:
    torch.manual_seed(0)
    model = TwoConv()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(1):  # one epoch: ~75% test accuracy
        perm = torch.randperm(len(data.train_x))
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    batch = torch.export.Dim("batch")  # a dynamic batch size: workers batch requests
    torch.export.save(torch.export.export(model, (data.train_x[:4],), dynamic_shapes={"x": {0: batch}}), path)


@pytest.fixture(scope="module")
def own_pair(tmp_path_factory, fashion_slice) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("own")
    base, parity = folder / "model.pt2", folder / "parity.pt"
    train_and_export(fashion_slice, base)
    # the user's own data, as a user brings it: the slice of real images as an .npz of uint8 pixels
    arrays = folder / "data.npz"
    pixels = lambda x: (x.numpy() * 255).round().astype(np.uint8)  # (N, 1, 28, 28): the original bytes
    np.savez(arrays, x_train=pixels(torch.cat([fashion_slice.train_x, fashion_slice.val_x])),
             y_train=torch.cat([fashion_slice.train_y, fashion_slice.val_y]).numpy(),
             x_test=pixels(fashion_slice.test_x), y_test=fashion_slice.test_y.numpy())
    subprocess.run([*CLI, "train-parity", "--base", str(base), "--dataset", f"npz:{arrays}", "--k", "2", "--code", "concat", "--loss", "kl", "--epochs", "3", "--batch-size",
                    "64", "--device", "cpu", "--quiet", "--out", str(parity)], check=True, timeout=120,
                   env={**os.environ, "OMP_NUM_THREADS": "2"})
    return base, parity


def get_json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def post(port: int, x: torch.Tensor) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"inputs": x.tolist()}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def wait_all_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    """/ready once the data workers and the parity worker have all passed their first probe."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "parm up exited early"
        try:
            ready = get_json(f"http://127.0.0.1:{port}/ready")
        except OSError:  # not listening yet
            ready = {}
        workers = ready.get("workers", {})
        if ready.get("ready") and all(w["healthy"] for role in ("data", "parity") for w in workers.get(role, [])):
            return ready
        time.sleep(0.1)
    raise AssertionError("the cluster did not become healthy in time")


def serve_stalled(base: Path, parity: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``parm up`` on the user's files, data worker 1 stalled after its first probe (probes are then 60 s apart,
    so it stays in rotation and every group has one query on it): (served outputs, degraded flags)."""
    port, env = free_port(), {**os.environ, "PARM_WORKER_SECRET": secrets.token_hex(32)}
    proc = subprocess.Popen([*CLI, "up", "--model", str(base), "--parity-model", str(parity), "--workers", "2",
                             "--k", "2", "--code", "concat", "--port", str(port), "--health-interval-s", "60",
                             "--deadline-ms", "5000", "--drain-timeout-s", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        ready = wait_all_healthy(port, proc)
        stalled = ready["workers"]["data"][1]["address"]
        subprocess.run([*CLI, "fault", stalled, "stall"], check=True, timeout=30, env=env, capture_output=True)
        outputs, degraded = [], []
        for g in range(N_GROUPS):  # one request = one coding group of 2 (sent one at a time)
            body = post(port, x[2 * g:2 * g + 2])
            outputs += body["outputs"]
            degraded += body["degraded"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return torch.tensor(outputs), torch.tensor(degraded)


def test_exported_model_and_its_parity_model_serve_degraded_answers_equal_to_the_offline_decode(
        own_pair, fashion_slice) -> None:
    base_path, parity_path = own_pair
    parity_ckpt = checkpoint.load(parity_path)
    assert parity_ckpt["arch"] == "program" and parity_ckpt["meta"]["init"] == "base"  # ParM: the base's weights
    assert parity_ckpt["meta"]["base_id"] == checkpoint.model_id(checkpoint.load(base_path))
    x, y = fashion_slice.test_x[:2 * N_GROUPS], fashion_slice.test_y[:2 * N_GROUPS]  # (80, 1, 28, 28), (80,)
    served, deg = serve_stalled(base_path, parity_path, x)
    assert int(deg.sum()) == N_GROUPS and bool((deg.view(-1, 2).sum(1) == 1).all())  # one decoded per group

    code = make_code("concat", 2)
    with torch.no_grad():
        base_out = torch.export.load(base_path).module()(x)                   # (80, 10): the user's own program
        pairs = x.view(N_GROUPS, 2, 1, 28, 28).transpose(0, 1)                # (k=2, G, 1, 28, 28)
        parity_out = checkpoint.build_model(parity_ckpt)(code.encode(pairs)[0])  # (G, 10)
    data_out = base_out.view(N_GROUPS, 2, 10).transpose(0, 1)                 # (k=2, G, 10)
    missing = deg.view(N_GROUPS, 2).int().argmax(1)                           # (G,) the slot that was decoded
    decoded = torch.stack([code.decode_batch(data_out, parity_out, i) for i in range(2)])  # (k, G, 10)
    expected = base_out.clone().view(N_GROUPS, 2, 10)
    expected[torch.arange(N_GROUPS), missing] = decoded[missing, torch.arange(N_GROUPS)]
    torch.testing.assert_close(served, expected.view(-1, 10), rtol=1e-4, atol=1e-4)
    accuracy = float((served[deg].argmax(1) == y[deg]).float().mean())
    assert accuracy > 0.3, accuracy  # 3 epochs from the base's weights: far above chance (0.1)
