"""The demo cache trains once per settings and reuses the files afterwards."""
from __future__ import annotations

from pathlib import Path

import pytest

from parity_models import demo, train, train_base


def test_trains_once_then_reuses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []

    def fake_base(cfg: train_base.BaseConfig) -> None:
        calls.append("base")
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_bytes(b"base")

    def fake_parity(cfg: train.ParityConfig) -> None:
        calls.append(f"parity k={cfg.k} {cfg.code}")
        Path(cfg.out).write_bytes(b"parity")

    monkeypatch.setattr(train_base, "train_base", fake_base)
    monkeypatch.setattr(train, "train_parity", fake_parity)
    base, parity = demo.ensure_demo_models(tmp_path, "mnist", 2, "concat")
    assert base.read_bytes() == b"base" and parity.read_bytes() == b"parity"
    assert demo.ensure_demo_models(tmp_path, "mnist", 2, "concat") == (base, parity)
    assert calls == ["base", "parity k=2 concat"]
    other = demo.ensure_demo_models(tmp_path, "mnist", 4, "concat")
    assert other[0] != base and calls[-1] == "parity k=4 concat"
