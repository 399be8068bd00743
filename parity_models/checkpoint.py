"""Self-describing checkpoints: everything needed to rebuild a model from the file alone.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``):
  format: "parm-checkpoint/1"; kind: "base" | "parity"; arch: str; arch_args: dict;
  state_dict; input_shape: list[int]; num_classes: int; meta: dict (dataset, normalisation,
  metrics, and for parity models {"k", "code", "base_id"}).
``model_id`` is a content hash of arch, args and weights, used to pair parity with base models.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parity_models.models import build

FORMAT = "parm-checkpoint/1"
REQUIRED = ("format", "kind", "arch", "arch_args", "state_dict", "input_shape", "num_classes")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not a parm checkpoint."""


def model_id(ckpt: dict[str, Any]) -> str:
    """Short content hash identifying a checkpoint's model (architecture + weights)."""
    h = hashlib.sha256(repr((ckpt["arch"], sorted(ckpt["arch_args"].items()))).encode())
    for name in sorted(ckpt["state_dict"]):
        h.update(name.encode())
        h.update(ckpt["state_dict"][name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def make_checkpoint(model: nn.Module, *, kind: str, arch: str, arch_args: dict[str, Any],
                    input_shape: list[int], num_classes: int, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "kind": kind, "arch": arch, "arch_args": dict(arch_args), "state_dict": state,
            "input_shape": [int(d) for d in input_shape], "num_classes": int(num_classes), "meta": dict(meta or {})}


def save(ckpt: dict[str, Any], path: str | Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or pickled files
        raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    return ckpt


def build_model(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module described by ``ckpt`` in eval mode on ``device``."""
    model = build(ckpt["arch"], ckpt["arch_args"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def check_pair(base_ckpt: dict[str, Any], parity_ckpt: dict[str, Any], k: int, code: str) -> None:
    """Raise CheckpointError unless ``parity_ckpt`` was trained for ``base_ckpt`` with this k and code.

    The frontend calls this before serving, so a parity model never decodes against the wrong base model.
    """
    if base_ckpt.get("kind") != "base" or parity_ckpt.get("kind") != "parity":
        raise CheckpointError(f"expected a base and a parity checkpoint, got kinds "
                              f"{base_ckpt.get('kind')!r} and {parity_ckpt.get('kind')!r}")
    meta = parity_ckpt.get("meta", {})
    problems = []
    if meta.get("k") != k:
        problems.append(f"it was trained for k={meta.get('k')}, not k={k}")
    if meta.get("code") != code:
        problems.append(f"it was trained for code {meta.get('code')!r}, not {code!r}")
    if meta.get("base_id") != model_id(base_ckpt):
        problems.append(f"it was trained for base model {meta.get('base_id')}, not {model_id(base_ckpt)}")
    if list(parity_ckpt["input_shape"]) != list(base_ckpt["input_shape"]):
        problems.append(f"input shape {parity_ckpt['input_shape']} differs from the base's {base_ckpt['input_shape']}")
    if parity_ckpt["num_classes"] != base_ckpt["num_classes"]:
        problems.append(f"{parity_ckpt['num_classes']} outputs, the base has {base_ckpt['num_classes']}")
    if problems:
        raise CheckpointError("parity model does not match: " + "; ".join(problems))
