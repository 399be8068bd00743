"""Evaluation's numbers are consistent: with a linear base model and a sum code decoding is exact."""
from __future__ import annotations

import torch

from coders import make_code
from parity_models.evaluate import degraded_metrics, evaluate, make_groups, parity_outputs
from parity_models.models import Linear


def test_groups_partition_indices() -> None:
    groups = make_groups(11, 3, seed=5)
    assert groups.shape == (3, 3) and len(set(groups.flatten().tolist())) == 9
    assert torch.equal(groups, make_groups(11, 3, seed=5))


def test_linear_sum_code_decodes_exactly() -> None:
    torch.manual_seed(0)
    k = 3
    x, y = torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,))
    base = Linear([1, 28, 28], 10)
    parity = Linear([1, 28, 28], 10, bias_scale=k)  # F(X1 + ... + Xk) = F(X1) + ... + F(Xk) exactly
    parity.load_state_dict(base.state_dict())
    code, groups = make_code("sum", k), make_groups(len(x), k)
    with torch.no_grad():
        base_out = base(x)
    metrics = degraded_metrics(base_out, parity_outputs(parity, code, x, groups), groups, y, code)
    assert abs(metrics["degraded_top1"] - metrics["base_top1"]) < 1e-9
    assert abs(metrics["degraded_top5"] - metrics["base_top5"]) < 1e-9
    assert metrics["recon_top1"] == 100.0 and metrics["recon_top5"] == 100.0


def test_useless_parity_model_scores_low() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(200, 1, 28, 28), torch.randint(0, 10, (200,))
    base = Linear([1, 28, 28], 10)
    code, groups = make_code("concat", 2), make_groups(len(x), 2)
    with torch.no_grad():
        base_out = base(x)
    labels_as_base = base_out.argmax(1)  # labels that the base model gets 100% right
    zero = Linear([1, 28, 28], 10, bias_scale=0.0)
    torch.nn.init.zeros_(zero.fc.weight)
    metrics = degraded_metrics(base_out, parity_outputs(zero, code, x, groups), groups, labels_as_base, code)
    assert metrics["base_top1"] == 100.0 and metrics["recon_top1"] < 50.0


def test_tiled_model_is_the_weighted_sum_of_its_tile_network_on_each_image() -> None:
    """TiledMLP(concat(X)) == sum_i w_i g(downsampled X_i): the tiles it cuts are the code's tiles."""
    from coders import ConcatCode
    from parity_models.models import TiledMLP

    torch.manual_seed(0)
    for k, shape in ((2, (1, 28, 28)), (8, (1, 28, 28)), (4, (3, 32, 32))):
        model = TiledMLP(list(shape), 10, k=k, weights=[1.0 + i for i in range(k)]).eval()
        x = torch.rand(k, 5, *shape)  # (k, B, C, H, W)
        tiled = ConcatCode(k).encode(x)[0]  # (B, C, H, W)
        want = torch.zeros(5, 10)
        for i, (t, b, l, r) in enumerate(model.tiles):
            tile = torch.nn.functional.pad(tiled[:, :, t:b, l:r], (0, model.tw - (r - l), 0, model.th - (b - t)))
            want += (1.0 + i) * model.g(tile)
        assert torch.allclose(model(tiled), want, atol=1e-5)


def test_evaluate_decodes_a_lone_parity_model_with_its_own_code_row() -> None:
    """``parm eval --parity p1.pt`` (parity_index 1): an exact linear parity model of row 1 must decode
    exactly; decoding it with row 0's weights (the old behaviour) was far off."""
    from parity_models import checkpoint
    from parity_models.data import Dataset

    torch.manual_seed(0)
    k, shape = 3, [1, 28, 28]
    base = Linear(shape, 10)
    row = make_code("sum", k, 2).coeffs[1]  # parity model 1 learns sum_i row[i] F(X_i)
    parity = Linear(shape, 10, bias_scale=float(row.sum()))  # exact for P_1 = sum_i row[i] X_i
    parity.load_state_dict(base.state_dict())
    base_ckpt = checkpoint.make_checkpoint(base, kind="base", arch="linear", arch_args={"input_shape": shape},
                                           input_shape=shape, num_classes=10, meta={"dataset": "test"})
    parity_ckpt = checkpoint.make_checkpoint(
        parity, kind="parity", arch="linear", arch_args={"input_shape": shape, "bias_scale": float(row.sum())},
        input_shape=shape, num_classes=10,
        meta={"k": k, "code": "sum", "parity_index": 1, "base_id": checkpoint.model_id(base_ckpt)})
    x = torch.rand(300, *shape)
    with torch.no_grad():
        y = base(x).argmax(1)  # labels the base model gets right: exact decoding scores 100%
    data = Dataset("test", x, y, x, y, x, y, 10)
    result = evaluate(base_ckpt, parity_ckpt, device="cpu", data=data)
    assert result["parity_index"] == 1 and result["degraded_top1"] == 100.0 and result["recon_top1"] == 100.0
