"""``parm import-model``: a user's torch.export (.pt2) or TorchScript model made a parm base checkpoint, with
what the file does not say (input shape, normalisation, dataset) recorded beside its bytes.

Data flow: model file -> checkpoint.import_program -> [scored on the dataset, if given] -> base checkpoint that
``parm train-parity``, ``parm eval``, ``parm worker`` and ``parm up`` take like any other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from parity_models import checkpoint
from parity_models.data import check_fits, load_dataset
from parity_models.device import predict, resolve_device
from parity_models.models import Stats
from parity_models.train_base import accuracy


def import_model(src: str | Path, out: str | Path, *, input_shape: list[int] | None = None,
                 num_classes: int | None = None, mean: Stats = 0.0, std: Stats = 1.0, dataset: str | None = None,
                 data_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Write ``out``, the base checkpoint of ``src``; with ``dataset``, also its val/test accuracy there
    (and the dataset recorded, so ``parm train-parity --base out`` needs no --dataset)."""
    ckpt = checkpoint.import_program(src, input_shape=input_shape, num_classes=num_classes, mean=mean, std=std)
    if dataset:
        data = load_dataset(dataset, data_dir)
        check_fits(ckpt, data)
        model = checkpoint.build_model(ckpt, resolve_device(device))
        ckpt["meta"].update(dataset=data.name, val_acc=accuracy(predict(model, data.val_x), data.val_y),
                            test_acc=accuracy(predict(model, data.test_x), data.test_y))
        if data.classes:
            ckpt["meta"]["classes"] = data.classes
    checkpoint.save(ckpt, out)
    return ckpt


def parse_stats(text: str | None, default: float) -> Stats:
    """``--mean``/``--std`` text: one number, or one per channel comma-separated."""
    if text is None:
        return default
    values = [float(v) for v in text.split(",") if v.strip()]
    return values[0] if len(values) == 1 else values


def parse_shape(text: str | None) -> list[int] | None:
    """``--input-shape 1,28,28`` -> [1, 28, 28]."""
    return [int(v) for v in text.replace("x", ",").split(",") if v.strip()] if text else None
