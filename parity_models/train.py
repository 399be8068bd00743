"""Parity-model training: sample k-tuples of training images, encode them with the coders/ code and pull
the parity model's output towards the code's target (losses.py), validating degraded accuracy per epoch.

Data flow: base checkpoint + Dataset -> precomputed base outputs -> parity_build (architecture, starting
weights) -> training loop -> parity checkpoints (``out`` = best by validation degraded top-1,
``<stem>.last<suffix>`` = last, with optimizer state).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from coders import make_code
from parity_models import checkpoint
from parity_models.data import Dataset, check_fits, dataset_for_model
from parity_models.device import predict, resolve_device
from parity_models.errors import SetupError
from parity_models.evaluate import degraded_metrics, make_groups, parity_outputs
from parity_models.losses import LABELLED, LOSSES, parity_loss
from parity_models.parity_build import ParityModel, build_parity, encoded_stats, parity_arch, sample_tuples

__all__ = ["DEFAULT_EPOCHS", "ParityConfig", "bar_disabled", "cosine_lr", "encoded_stats", "last_path", "parity_arch",
           "parity_loss", "sample_tuples", "train_parity"]

DEFAULT_EPOCHS = 30  # used when neither --epochs nor --time-budget is given


@dataclass
class ParityConfig:
    base: str
    k: int
    code: str
    out: str
    parity_index: int = 0  # which of the code's parity rows this model learns (r >= 2: one model per row)
    arch: str = "same"  # same | mlp | lenet5 | resnet18 | tiled (concat only) | collage (collage only)
    init: str | None = None  # base (the base model's weights; default for arch same) | scratch
    cost_budget: float | None = None  # tiled/collage: size the per-tile network to <= this many base queries' MACs
    epochs: int | None = None
    time_budget: float | None = None  # seconds of training loop (setup excluded), over all resumes
    loss: str = "mse"  # losses.LOSSES: mse (ParM's regression onto the summed outputs), kl, kl-ce, ce-base
    dataset: str | None = None  # default: the one the base checkpoint records
    resume: str | None = None
    device: str = "auto"
    seed: int = 0
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    data_dir: str | None = None
    progress: bool = True


def last_path(out: str | Path) -> Path:
    """Where the last (resumable) checkpoint goes: parity.pt -> parity.last.pt."""
    out = Path(out)
    return out.with_name(f"{out.stem}.last{out.suffix}")


def bar_disabled(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a per-step bar: None draws it only on a terminal, because outside one (a CI
    log, ``> log``, a pipe) every redraw would be a line; there the epoch line is the progress."""
    return None if progress else True


def cosine_lr(base_lr: float, progress: float) -> float:
    """Cosine decay from base_lr to 0 as training progress goes from 0 to 1."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_parity(cfg: ParityConfig, data: Dataset | None = None) -> dict[str, Any]:
    """Train a parity model for the base checkpoint ``cfg.base``; returns the best checkpoint."""
    if cfg.loss not in LOSSES:
        raise SetupError(f"unknown loss {cfg.loss!r}; known: {', '.join(LOSSES)}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    base_ckpt = checkpoint.load(cfg.base)
    data = data or dataset_for_model(base_ckpt, cfg.dataset, cfg.data_dir)
    check_fits(base_ckpt, data)
    if cfg.parity_index < 0:
        raise SetupError(f"parity_index must be >= 0, got {cfg.parity_index}")
    code = make_code(cfg.code, cfg.k, cfg.parity_index + 1)  # rows 0..parity_index; this model learns the last
    index = cfg.parity_index
    code.check_input_shape(tuple(data.input_shape))
    epochs = cfg.epochs or (10**9 if cfg.time_budget else DEFAULT_EPOCHS)

    # Base outputs never change during training: compute them once for every image.
    base = checkpoint.build_model(base_ckpt, device)
    train_x, val_x = data.train_x.to(device), data.val_x.to(device)  # (N, *S), (V, *S)
    train_out, val_out = predict(base, train_x), predict(base, val_x)  # (N, C), (V, C)
    train_y = data.train_y.to(device)  # (N,), for the losses that use labels
    val_groups = make_groups(len(val_x), cfg.k)  # (V // k, k), the same groups every epoch
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)

    resumed = _load_resume(cfg, base_ckpt) if cfg.resume else None
    if resumed:
        parity = ParityModel(checkpoint.build_model(resumed, device), resumed["arch"], resumed["arch_args"],
                             resumed["meta"].get("init", "scratch"), resumed.get("program"))
    else:
        parity = build_parity(base_ckpt, cfg.arch, cfg.init, code, train_x, index, cfg.seed, device,
                              cfg.cost_budget)
    model, arch, arch_args = parity.module, parity.arch, parity.arch_args
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    meta = {"k": cfg.k, "code": cfg.code, "parity_index": index, "base_id": checkpoint.model_id(base_ckpt),
            "dataset": data.name, "loss": cfg.loss, "init": parity.init, "seed": cfg.seed,
            "normalization": {"mean": arch_args.get("mean"), "std": arch_args.get("std")}}
    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "best": -1.0, "history": []}
    if resumed:
        opt.load_state_dict(resumed["train_state"]["optimizer"])
        state = {key: resumed["train_state"][key] for key in state}
    best_ckpt: dict[str, Any] | None = None

    t0 = time.perf_counter() - state["elapsed"]
    for epoch in range(state["epoch"], epochs):
        tuples = sample_tuples(len(train_x), cfg.k, cfg.seed * 100_003 + epoch).to(device)  # (N, k)
        model.train()
        total, count, out_of_time = 0.0, 0, False
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", disable=bar_disabled(cfg.progress), leave=False)
        for s in bar:
            elapsed = time.perf_counter() - t0
            progress = max(state["step"] / (epochs * steps_per_epoch),
                           elapsed / cfg.time_budget if cfg.time_budget else 0.0)
            if progress >= 1.0:
                out_of_time = True
                break
            for group in opt.param_groups:
                group["lr"] = cosine_lr(cfg.lr, progress)
            idx = tuples[s * cfg.batch_size:(s + 1) * cfg.batch_size].T  # (k, B)
            encoded = code.encode(train_x[idx])[index]  # (k, B, *S) -> (B, *S)
            labels = train_y[idx] if cfg.loss in LABELLED else None  # (k, B)
            loss = parity_loss(cfg.loss, model(encoded), train_out[idx], code, index, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            total, count = total + loss.detach(), count + 1  # no .item() per step: it would sync a GPU
            if s % 50 == 0:
                bar.set_postfix(loss=f"{float(total) / count:.4f}")
        if count == 0:
            break

        val = degraded_metrics(val_out, parity_outputs(model, code, val_x, val_groups, index), val_groups, data.val_y,
                               code, index)
        state.update(epoch=epoch + 1, elapsed=time.perf_counter() - t0)
        record = {"epoch": epoch + 1, "train_loss": float(total) / count, "elapsed_s": round(state["elapsed"], 2),
                  **val}
        state["history"].append(record)
        tqdm.write(_epoch_line(epoch + 1, epochs, record, cfg.time_budget))
        ckpt = checkpoint.make_checkpoint(model, kind="parity", arch=arch, arch_args=arch_args,
                                          input_shape=data.input_shape, num_classes=data.num_classes,
                                          meta={**meta, "epochs": epoch + 1, "steps": state["step"],
                                                "elapsed_s": state["elapsed"], "val": val}, program=parity.program)
        if val["degraded_top1"] > state["best"]:
            state["best"], best_ckpt = val["degraded_top1"], ckpt
            checkpoint.save(ckpt, cfg.out)
        train_state = {**state, "optimizer": opt.state_dict(), "config": asdict(cfg)}
        checkpoint.save({**ckpt, "train_state": train_state}, last_path(cfg.out))
        if out_of_time:
            break
    return best_ckpt or checkpoint.load(cfg.out)


def _epoch_line(epoch: int, epochs: int, record: dict[str, Any], time_budget: float | None) -> str:
    of = f"/{epochs}" if epochs < 10**9 else ""  # a time-budgeted run has no epoch count
    budget = f" of {time_budget:g} s" if time_budget else ""
    return (f"epoch {epoch}{of}: loss {record['train_loss']:.4f}, val degraded {record['degraded_top1']:.2f}%, "
            f"recon {record['recon_top1']:.2f}%, base {record['base_top1']:.2f}%, {record['elapsed_s']:.1f} s{budget}")


def _load_resume(cfg: ParityConfig, base_ckpt: dict[str, Any]) -> dict[str, Any]:
    """The ``.last`` checkpoint to continue from, checked against this run's base model, k and code."""
    ckpt = checkpoint.load(cfg.resume)
    if "train_state" not in ckpt:
        raise checkpoint.CheckpointError(f"{cfg.resume} has no training state; resume from the .last checkpoint")
    meta = ckpt["meta"]
    if (meta["k"], meta["code"], meta.get("parity_index", 0)) != (cfg.k, cfg.code, cfg.parity_index) or \
            meta["base_id"] != checkpoint.model_id(base_ckpt):
        raise checkpoint.CheckpointError(f"{cfg.resume} was trained for another base model, k, code or parity index")
    return ckpt
