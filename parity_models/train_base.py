"""Base-model training: the deployed model F that parity models learn to protect.

Data flow: Dataset -> cross-entropy training -> base checkpoint (kind "base", meta: dataset,
normalization, val/test accuracy, epochs, seed) that workers load with checkpoint.load + build_model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from parity_models import checkpoint
from parity_models.data import Dataset, load_dataset
from parity_models.device import predict, resolve_device
from parity_models.models import build
from parity_models.train import bar_disabled, cosine_lr


@dataclass
class BaseConfig:
    dataset: str  # a built-in name, folder:PATH or npz:PATH (data.load_dataset)
    arch: str
    out: str
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-5
    device: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    progress: bool = True


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent: out (N, C), y (N,)."""
    return 100.0 * float((out.argmax(1) == y.to(out.device)).float().mean())


def train_base(cfg: BaseConfig, data: Dataset | None = None) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``cfg.dataset`` with Adam and a cosine schedule; save and return the checkpoint."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = data or load_dataset(cfg.dataset, cfg.data_dir)
    norm = data.normalization()
    args: dict[str, Any] = {"input_shape": data.input_shape, "num_classes": data.num_classes}
    if cfg.arch != "linear":
        args.update(norm)
    model = build(cfg.arch, args).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = data.train_x.to(device), data.train_y.to(device)  # (N, *S), (N,)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed)

    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen).to(device)
        bar = tqdm(range(steps_per_epoch), desc=f"base epoch {epoch + 1}", disable=bar_disabled(cfg.progress),
                   leave=False)
        for s in bar:
            for group in opt.param_groups:
                group["lr"] = cosine_lr(cfg.lr, (epoch * steps_per_epoch + s) / (cfg.epochs * steps_per_epoch))
            idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]  # (B,)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val_acc = accuracy(predict(model, data.val_x), data.val_y)
        tqdm.write(f"base epoch {epoch + 1}/{cfg.epochs}: loss {loss.item():.4f}, val acc {val_acc:.2f}%, "
                   f"{time.perf_counter() - t0:.1f} s")

    meta = {"dataset": data.name, "normalization": norm, "epochs": cfg.epochs, "seed": cfg.seed,
            "val_acc": accuracy(predict(model, data.val_x), data.val_y),
            "test_acc": accuracy(predict(model, data.test_x), data.test_y)}
    if data.classes:  # an image folder's class names: output i is classes[i]
        meta["classes"] = data.classes
    ckpt = checkpoint.make_checkpoint(model.cpu(), kind="base", arch=cfg.arch, arch_args=args,
                                      input_shape=data.input_shape, num_classes=data.num_classes, meta=meta)
    checkpoint.save(ckpt, cfg.out)
    return ckpt
