"""End to end on real data: a base + parity pair trained on the shipped Fashion-MNIST slice, served by worker processes; with a
stalled worker, each degraded answer equals the offline decode of the same group, and their
accuracy matches the offline degraded accuracy of those groups."""
from __future__ import annotations

import pytest
import torch

from coders import make_code
from frontend.config import FrontendConfig
from parity_models import checkpoint
from parity_models.evaluate import evaluate
from parity_models.train import ParityConfig, train_parity
from parity_models.train_base import BaseConfig, train_base
from workers.cluster import LocalCluster, cluster_specs
from tests.conftest import eventually, frontend, service_of
from tests.e2e.test_cluster import set_fault

pytestmark = pytest.mark.e2e
N_GROUPS = 100


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory, fashion_slice) -> tuple[str, str]:
    """8 epochs each on the 2,700 training images (a few seconds): base ~84%, degraded ~76% measured."""
    folder = tmp_path_factory.mktemp("models")
    base, parity = str(folder / "base.pt"), str(folder / "parity.pt")
    train_base(BaseConfig("fashion-mnist", "mlp", base, epochs=8, batch_size=64, device="cpu", progress=False), fashion_slice)
    train_parity(ParityConfig(base, 2, "concat", parity, epochs=8, batch_size=64, device="cpu", progress=False), fashion_slice)
    return base, parity


async def test_served_degraded_answers_equal_the_offline_decode(trained_pair, fashion_slice) -> None:
    base_path, parity_path = trained_pair
    data = fashion_slice
    x, y = data.test_x[:2 * N_GROUPS], data.test_y[:2 * N_GROUPS]  # (200, 1, 28, 28), (200,)
    cluster = LocalCluster(cluster_specs(2, 1, "coded", base_path, parity_path))
    await cluster.start()
    try:
        # no fallback copies: under load the parity output can be late, and a copy of the stalled
        # query to the healthy worker would then answer it exactly, not decoded (seen once in CI)
        cfg = FrontendConfig(data=cluster.addresses("data"), parity=cluster.addresses("parity"), k=2,
                             code="concat", deadline_ms=5000, health_interval_s=60.0, hedge_fallback=False)
        async with frontend(cfg) as c:
            await eventually(lambda: all(w.healthy for w in service_of(c).pool.parity), timeout=20.0)
            await set_fault(cluster.addresses("data")[1], "stall")
            outputs, degraded = [], []
            for g in range(N_GROUPS):  # one request = one group of 2: groups are known exactly
                resp = await c.post("/predict", json={"inputs": x[2 * g:2 * g + 2].numpy().tolist()})
                body = await resp.json()
                assert resp.status == 200, body
                outputs += body["outputs"]
                degraded += body["degraded"]
            assert service_of(c).stats.groups_coded == N_GROUPS
            await set_fault(cluster.addresses("data")[1], "none")
    finally:
        await cluster.stop()

    served, deg = torch.tensor(outputs), torch.tensor(degraded)
    assert deg.sum() == N_GROUPS  # exactly one query per group came back decoded
    base = checkpoint.build_model(checkpoint.load(base_path))
    parity = checkpoint.build_model(checkpoint.load(parity_path))
    code = make_code("concat", 2)
    with torch.no_grad():
        base_out = base(x)                                                   # (200, 10)
        pairs = x.view(N_GROUPS, 2, 1, 28, 28).transpose(0, 1)               # (k=2, G, 1, 28, 28)
        parity_out = parity(code.encode(pairs)[0])                           # (G, 10)
    expected = base_out.clone()
    for g in range(N_GROUPS):
        missing = 2 * g + int(deg[2 * g + 1])  # the slot that was decoded
        other = 2 * g + 1 - (missing - 2 * g)
        expected[missing] = parity_out[g] - base_out[other]
    torch.testing.assert_close(served, expected, rtol=1e-4, atol=1e-4)
    served_acc = float((served[deg].argmax(1) == y[deg]).float().mean())
    offline_acc = float((expected[deg].argmax(1) == y[deg]).float().mean())
    assert served_acc == pytest.approx(offline_acc, abs=1e-9)
    assert served_acc > 0.5  # a parity model trained for seconds is already far above chance (0.1)
    # and it agrees with `parm eval`'s degraded accuracy over the whole test set, within sampling error
    a_d = evaluate(base_path, parity_path, device="cpu", data=data)["degraded_top1"] / 100
    assert abs(served_acc - a_d) <= 3 * (a_d * (1 - a_d) / N_GROUPS) ** 0.5 + 0.01, (served_acc, a_d)


@pytest.fixture(scope="module")
def trained_r2(trained_pair, tmp_path_factory, fashion_slice) -> tuple[str, list[str]]:
    """Two tiled parity models (parity_index 0 and 1) for the same base model: r=2 learned code."""
    base = trained_pair[0]
    folder = tmp_path_factory.mktemp("r2")
    parities = [str(folder / f"p{i}.pt") for i in (0, 1)]
    for i, out in enumerate(parities):
        train_parity(ParityConfig(base, 2, "concat", out, parity_index=i, arch="tiled", epochs=1, device="cpu",
                                  progress=False), fashion_slice)
    return base, parities


async def test_two_stalled_workers_are_rebuilt_from_two_learned_parities(trained_r2, fashion_slice) -> None:
    """k=2, r=2 with both data workers stalled: every answer is solved from the two parity models'
    outputs, exactly as coders' decode does offline with the same checkpoints."""
    base_path, parity_paths = trained_r2
    n_groups = 20
    x = fashion_slice.test_x[:2 * n_groups]  # (40, 1, 28, 28)
    # parity models listed in reverse: the frontend must route by each worker's parity_index
    cluster = LocalCluster(cluster_specs(2, 2, "coded", base_path, parity_paths[::-1]))
    await cluster.start()
    try:
        cfg = FrontendConfig(data=cluster.addresses("data"), parity=cluster.addresses("parity"), k=2, r=2,
                             code="concat", deadline_ms=5000, health_interval_s=60.0)
        async with frontend(cfg) as c:
            # /ready needs data workers only; this test needs both parity workers serving from the start
            await eventually(lambda: all(w.healthy for w in service_of(c).pool.parity), timeout=20.0)
            for address in cluster.addresses("data"):
                await set_fault(address, "stall")
            outputs = []
            for g in range(n_groups):
                resp = await c.post("/predict", json={"inputs": x[2 * g:2 * g + 2].numpy().tolist()})
                body = await resp.json()
                assert resp.status == 200, body
                assert body["degraded"] == [True, True]
                outputs += body["outputs"]
            for address in cluster.addresses("data"):
                await set_fault(address, "none")
    finally:
        await cluster.stop()
    code = make_code("concat", 2, 2)
    with torch.no_grad():
        pairs = x.view(n_groups, 2, 1, 28, 28).transpose(0, 1)  # (k=2, G, 1, 28, 28)
        parity_out = [checkpoint.build_model(checkpoint.load(p))(code.encode(pairs)[i])
                      for i, p in enumerate(parity_paths)]  # r x (G, 10)
    decoded = code.decode({2: parity_out[0], 3: parity_out[1]})  # both data outputs missing
    expected = torch.stack([decoded[0], decoded[1]], 1).reshape(2 * n_groups, 10)
    torch.testing.assert_close(torch.tensor(outputs), expected, rtol=1e-4, atol=1e-4)
