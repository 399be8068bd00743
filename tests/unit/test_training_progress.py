"""Training progress outside a terminal (a CI log, ``> log``, a pipe): one line per epoch, no bars."""
from __future__ import annotations

import re

import pytest
import torch

from parity_models.data import Dataset
from parity_models.train import ParityConfig, train_parity
from parity_models.train_base import BaseConfig, train_base

EPOCHS = 3


def random_data(n: int = 96) -> Dataset:
    gen = torch.Generator().manual_seed(0)

    def split(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(m, 1, 28, 28, generator=gen), torch.randint(0, 10, (m,), generator=gen)

    (tx, ty), (vx, vy), (sx, sy) = split(n), split(32), split(32)
    return Dataset("fashion-mnist", tx, ty, vx, vy, sx, sy, num_classes=10)


def output_lines(text: str) -> list[str]:
    """What a log viewer shows: a carriage return (a redrawn bar) starts a line too."""
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def test_training_outside_a_terminal_prints_one_line_per_epoch(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    data = random_data()
    base = tmp_path / "base.pt"
    # batch size 8: 12 steps an epoch, each of which a bar would redraw
    train_base(BaseConfig("fashion-mnist", "mlp", str(base), epochs=EPOCHS, batch_size=8, device="cpu",
                          progress=True), data)
    out = capsys.readouterr()
    assert "\r" not in out.err + out.out  # no bar control characters in a log
    lines = output_lines(out.err + out.out)
    assert len(lines) <= EPOCHS, lines
    assert re.fullmatch(r"base epoch 3/3: loss \d+\.\d+, val acc \d+\.\d+%, \d+\.\d s", lines[-1]), lines

    train_parity(ParityConfig(str(base), 2, "sum", str(tmp_path / "parity.pt"), epochs=EPOCHS, batch_size=8,
                              device="cpu", progress=True), data)
    out = capsys.readouterr()
    assert "\r" not in out.err + out.out
    lines = output_lines(out.err + out.out)
    assert len(lines) <= EPOCHS, lines
    assert re.match(r"epoch 3/3: loss \d+\.\d+, val degraded \d+\.\d+%", lines[-1]), lines
