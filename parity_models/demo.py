"""Cached demo models: a base MLP and its parity model, trained once per settings and reused.

Used by the demo and e2e tests (``ensure_demo_models``) and by ``parm train-demo``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def ensure_demo_models(cache_dir: str | Path, dataset: str = "fashion-mnist", k: int = 2, code: str = "concat",
                       base_epochs: int = 5, time_budget: float = 100.0, parity_epochs: int = 25, seed: int = 0,
                       device: str = "auto", data_dir: str | None = None, progress: bool = False) -> tuple[Path, Path]:
    """Return (base_path, parity_path), training a base ``mlp`` and its parity model unless files for
    exactly these settings are already in ``cache_dir`` (a folder per settings hash).

    Parity training stops after ``parity_epochs`` or ``time_budget`` seconds, whichever comes first (its
    learning rate schedule follows whichever is nearer), so a busy machine costs accuracy, not minutes."""
    from parity_models.train import ParityConfig, train_parity  # torch only when needed
    from parity_models.train_base import BaseConfig, train_base

    # concat: the tiled parity model with the KL loss (Fashion-MNIST k=2: 88.8% degraded vs 86.6% for
    # an MLP on the whole tiled image with MSE; BENCHMARKS.md); other codes: the base architecture
    parity_arch = "tiled" if code == "concat" else "same"
    settings = {"dataset": dataset, "k": k, "code": code, "base_epochs": base_epochs,
                "time_budget": time_budget, "parity_epochs": parity_epochs, "seed": seed, "arch": "mlp",
                "parity_arch": parity_arch, "loss": "kl"}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / f"{dataset}-k{k}-{code}-{key}"
    base_path, parity_path = folder / "base.pt", folder / "parity.pt"
    if not base_path.is_file():
        log.info("training demo base model into %s", base_path)
        train_base(BaseConfig(dataset, "mlp", str(base_path), epochs=base_epochs, seed=seed, device=device,
                              data_dir=data_dir, progress=progress))
    done = folder / "settings.json"  # written last: a parity.pt without it is from an interrupted run
    if not (parity_path.is_file() and done.is_file()):
        log.info("training demo parity model into %s (at most %.0f s)", parity_path, time_budget)
        train_parity(ParityConfig(str(base_path), k, code, str(parity_path), arch=parity_arch, loss="kl",
                                  epochs=parity_epochs, time_budget=time_budget, seed=seed, device=device,
                                  data_dir=data_dir, progress=progress))
        done.write_text(json.dumps(settings, indent=1))
    return base_path, parity_path
