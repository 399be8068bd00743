"""A user's own model as a program (torch.export .pt2, TorchScript): read directly or imported with what it
does not say, identified by its bytes, served by workers, refused clearly when unusable; and the parity
model's starting point (the base's weights, inputs renormalised to look like images) and losses."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from coders import make_code
from parity_models import checkpoint, programs
from parity_models.cli import LOSS_CHOICES, register
from parity_models.losses import LOSSES, parity_loss
from parity_models.models import MLP
from parity_models.parity_build import build_parity, load_base_weights, matched_norm
from workers.model import load_model


class Tiny(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)  # (B, 2, 4, 4)
        self.fc = nn.Linear(2 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8) -> (B, classes)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.flatten(1) + b.flatten(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("programs")
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.rand(3, 1, 8, 8)
    paths = {name: folder / f"{name}" for name in ("dynamic.pt2", "static.pt2", "two.pt2", "script.ts")}
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}), paths["dynamic.pt2"])
    torch.export.save(torch.export.export(model, (x[:1],)), paths["static.pt2"])
    torch.export.save(torch.export.export(TwoInputs(), (x, x)), paths["two.pt2"])
    torch.jit.save(torch.jit.script(model), paths["script.ts"])
    torch.save(model.state_dict(), folder / "weights.pt")
    paths["weights.pt"], paths["model"] = folder / "weights.pt", folder / "model"
    torch.save(model, paths["model"])  # a pickled module: not a program, not a checkpoint
    return paths


def test_a_pt2_is_read_as_a_base_checkpoint_with_its_shape_and_classes(files: dict[str, Path]) -> None:
    ckpt = checkpoint.load(files["dynamic.pt2"])
    assert (ckpt["kind"], ckpt["arch"], ckpt["input_shape"], ckpt["num_classes"]) == ("base", "program", [1, 8, 8], 10)
    assert ckpt["arch_args"]["static_batch"] is None and ckpt["meta"]["program_format"] == "torch.export"
    x = torch.rand(5, 1, 8, 8)
    expected = torch.export.load(files["dynamic.pt2"]).module()(x)
    assert torch.equal(checkpoint.build_model(ckpt)(x), expected)
    # the identity is the archive's: the same file, read again or imported with nothing added, is the same model
    assert checkpoint.model_id(checkpoint.load(files["dynamic.pt2"])) == checkpoint.model_id(ckpt)
    assert checkpoint.model_id(checkpoint.import_program(files["dynamic.pt2"])) == checkpoint.model_id(ckpt)
    assert checkpoint.model_id(checkpoint.import_program(files["dynamic.pt2"], mean=0.5)) != checkpoint.model_id(ckpt)


def test_import_round_trips_through_a_weights_only_checkpoint(files: dict[str, Path], tmp_path: Path) -> None:
    ckpt = checkpoint.import_program(files["dynamic.pt2"], mean=0.25, std=0.5, input_shape=[1, 8, 8], num_classes=10)
    checkpoint.save(ckpt, tmp_path / "base.pt")
    loaded = checkpoint.load(tmp_path / "base.pt")  # torch.load(weights_only=True): the program is a uint8 tensor
    assert checkpoint.model_id(loaded) == checkpoint.model_id(ckpt)
    x = torch.rand(4, 1, 8, 8)
    program = torch.export.load(files["dynamic.pt2"]).module()
    torch.testing.assert_close(checkpoint.build_model(loaded)(x), program((x - 0.25) / 0.5))


def test_a_program_exported_for_one_batch_size_serves_any(files: dict[str, Path]) -> None:
    ckpt = checkpoint.load(files["static.pt2"])
    assert ckpt["arch_args"]["static_batch"] == 1
    x = torch.rand(3, 1, 8, 8)
    program = torch.export.load(files["dynamic.pt2"]).module()
    torch.testing.assert_close(checkpoint.build_model(ckpt)(x), program(x))


def test_torchscript_needs_its_input_shape(files: dict[str, Path]) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="--input-shape C,H,W"):
        checkpoint.load(files["script.ts"])
    ckpt = checkpoint.import_program(files["script.ts"], input_shape=[1, 8, 8])
    assert ckpt["arch_args"]["format"] == "torchscript" and ckpt["num_classes"] == 10
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(checkpoint.build_model(ckpt)(x), torch.jit.load(files["script.ts"])(x))


@pytest.mark.parametrize("name, kwargs, message", [
    ("two.pt2", {}, "takes 2 inputs"),
    ("dynamic.pt2", {"input_shape": [1, 9, 9]}, "exported for inputs"),
    ("dynamic.pt2", {"num_classes": 3}, "not --num-classes 3"),
    ("script.ts", {"input_shape": [3, 8, 8]}, "fails on a batch of inputs"),
    ("weights.pt", {}, "neither a torch.export"),
])
def test_unusable_programs_are_clear_errors(files: dict[str, Path], name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.import_program(files[name], **kwargs)


def test_files_that_are_no_model_stay_checkpoint_errors(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    for path in (tmp_path / "junk.pt2", files["weights.pt"], files["model"]):
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load(path)


def test_workers_serve_a_pt2_as_it_is(files: dict[str, Path]) -> None:
    served = load_model(str(files["dynamic.pt2"]))
    assert served.input_shape == (1, 8, 8) and served.num_classes == 10 and served.info["kind"] == "base"
    assert served.info["model_id"] == checkpoint.model_id(checkpoint.load(files["dynamic.pt2"]))
    x = torch.rand(6, 1, 8, 8)
    expected = torch.export.load(files["dynamic.pt2"]).module()(x).detach().numpy()
    assert served.predict(x.numpy()) == pytest.approx(expected, abs=1e-6)


def test_import_model_command(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "base.pt"
    args = parser.parse_args(["import-model", str(files["script.ts"]), "--input-shape", "1,8,8", "--mean", "0.5",
                              "--std", "0.25", "--out", str(out)])
    assert args.func(args) == 0
    ckpt = checkpoint.load(out)
    assert (ckpt["arch_args"]["mean"], ckpt["arch_args"]["std"]) == (0.5, 0.25)
    assert checkpoint.model_id(ckpt) in capsys.readouterr().out
    args = parser.parse_args(["import-model", str(files["script.ts"]), "--out", str(out)])
    assert args.func(args) == 2  # one line on stderr: TorchScript records no input shape
    assert "--input-shape" in capsys.readouterr().err


def test_matched_norm_makes_encoded_queries_look_like_images() -> None:
    # a base normalising images ~ (0.3, 0.2) with its own (M, S) = (0.3, 0.2): parity inputs ~ (0.6, 0.4)
    # must become ((e - m') / s') ~ (0, 1) as well
    mean, std = matched_norm((0.3, 0.2), (0.3, 0.2), (0.6, 0.4))
    assert (mean, std) == pytest.approx((0.6, 0.4))
    # a program normalising nothing (0, 1): it saw images ~ (0.3, 0.2) and must see encoded ones so too
    mean, std = matched_norm((0.0, 1.0), (0.3, 0.2), (0.6, 0.4))
    e = torch.randn(100_000) * 0.4 + 0.6
    seen = (e - mean) / std
    assert (float(seen.mean()), float(seen.std())) == pytest.approx((0.3, 0.2), abs=0.01)
    per_channel = matched_norm(([0.0] * 3, [1.0] * 3), ([0.3] * 3, [0.2] * 3), ([0.6] * 3, [0.4] * 3))
    assert isinstance(per_channel[0], list) and len(per_channel[0]) == 3


def test_parity_of_a_program_starts_from_its_weights_and_saves_self_contained(files: dict[str, Path]) -> None:
    base = checkpoint.load(files["dynamic.pt2"])
    code, x = make_code("sum", 2), torch.rand(64, 1, 8, 8)
    parity = build_parity(base, "same", None, code, x)
    assert (parity.arch, parity.init) == ("program", "base") and parity.program is base["program"]
    program = torch.export.load(files["dynamic.pt2"]).module()
    for name, p in program.named_parameters():
        assert torch.equal(parity.module.state_dict()[f"program.{name}"], p)
    assert parity.module.norm.std.item() == pytest.approx(2 ** 0.5, abs=0.1)  # a sum of 2 independent images
    scratch = build_parity(base, "same", "scratch", code, x)
    assert not torch.equal(scratch.module.state_dict()["program.fc.weight"], program.fc.weight)
    ckpt = checkpoint.make_checkpoint(parity.module, kind="parity", arch=parity.arch, arch_args=parity.arch_args,
                                      input_shape=[1, 8, 8], num_classes=10, program=parity.program)
    torch.testing.assert_close(checkpoint.build_model(ckpt)(x), parity.module.eval()(x))
    with pytest.raises(ValueError, match="needs --arch same"):
        build_parity(base, "mlp", "base", code, x)


def test_base_weights_go_into_a_same_arch_parity_model_but_not_its_normalisation() -> None:
    base = MLP([1, 8, 8], mean=0.3, std=0.2)
    parity = MLP([1, 8, 8], mean=0.6, std=0.4)
    load_base_weights(parity, base.state_dict())
    assert torch.equal(parity.net[2].weight, base.net[2].weight) and parity.net[0].mean.item() == pytest.approx(0.6)


@pytest.mark.parametrize("kind", LOSSES)
def test_losses_are_finite_and_pull_towards_the_base_outputs(kind: str) -> None:
    assert LOSS_CHOICES == LOSSES
    code = make_code("concat", 4)
    data_out = torch.randn(4, 16, 10)  # (k, B, C)
    labels = data_out.argmax(2)  # (k, B)
    good = code.target(data_out)[0]  # the exact parity output: every decode is the base's own output
    bad = good + torch.randn(16, 10)
    losses = [parity_loss(kind, out, data_out, code, 0, labels) for out in (good, bad.requires_grad_())]
    assert all(torch.isfinite(v) for v in losses) and losses[0] < losses[1]
    losses[1].backward()
    assert bad.grad is not None and torch.isfinite(bad.grad).all()


def test_kl_ce_needs_labels_and_unknown_losses_are_refused() -> None:
    code, out, data_out = make_code("sum", 2), torch.zeros(3, 10), torch.zeros(2, 3, 10)
    with pytest.raises(ValueError, match="needs the queries' labels"):
        parity_loss("kl-ce", out, data_out, code)
    with pytest.raises(ValueError, match="unknown loss"):
        parity_loss("hinge", out, data_out, code)
