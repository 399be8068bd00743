"""Self-describing checkpoints: everything needed to rebuild a model from the file alone.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``):
  format: "parm-checkpoint/1"; kind: "base" | "parity"; arch: str; arch_args: dict;
  state_dict; input_shape: list[int]; num_classes: int; meta: dict (dataset, normalisation,
  metrics, and for parity models {"k", "code", "parity_index", "base_id"}); for arch "program" (a user's
  torch.export / TorchScript model, programs.py) also program: the archive's bytes as a uint8 tensor.
``load`` also reads a .pt2 / TorchScript file itself, as the base checkpoint ``import_program`` makes of it.
``model_id`` is a content hash of arch, args, program and weights, used to pair parity with base models.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parity_models import programs
from parity_models.errors import CheckpointError
from parity_models.models import Stats, build

FORMAT = "parm-checkpoint/1"
REQUIRED = ("format", "kind", "arch", "arch_args", "state_dict", "input_shape", "num_classes")

__all__ = ["CheckpointError", "FORMAT", "build_model", "check_pair", "import_program", "load", "make_checkpoint",
           "model_id", "save"]


def model_id(ckpt: dict[str, Any]) -> str:
    """Short content hash identifying a checkpoint's model (architecture, program bytes + weights)."""
    h = hashlib.sha256(repr((ckpt["arch"], sorted(ckpt["arch_args"].items()))).encode())
    if "program" in ckpt:  # the archive as the user saved it: a base model's weights are in it
        h.update(programs.to_bytes(ckpt["program"]))
    for name in sorted(ckpt["state_dict"]):
        h.update(name.encode())
        h.update(ckpt["state_dict"][name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def make_checkpoint(model: nn.Module, *, kind: str, arch: str, arch_args: dict[str, Any],
                    input_shape: list[int], num_classes: int, meta: dict[str, Any] | None = None,
                    program: torch.Tensor | None = None) -> dict[str, Any]:
    """The checkpoint dict of ``model``; ``program`` (arch "program" only): the archive bytes it runs."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ckpt = {"format": FORMAT, "kind": kind, "arch": arch, "arch_args": dict(arch_args), "state_dict": state,
            "input_shape": [int(d) for d in input_shape], "num_classes": int(num_classes), "meta": dict(meta or {})}
    if program is not None:
        ckpt["program"] = program
    return ckpt


def save(ckpt: dict[str, Any], path: str | Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load(path: str | Path) -> dict[str, Any]:
    """A parm checkpoint, or a torch.export / TorchScript file read as the base checkpoint
    ``import_program`` makes of it with nothing given (input shape and classes read from the program)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if programs.sniff_format(path):
        return import_program(path)
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
    if ckpt["arch"] == programs.PROGRAM_ARCH:
        if "program" not in ckpt:
            raise CheckpointError("a checkpoint of arch 'program' lacks its program")
        return programs.build_program_model(ckpt["program"], ckpt["arch_args"], ckpt["state_dict"], device).eval()
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


def import_program(path: str | Path, *, input_shape: list[int] | None = None, num_classes: int | None = None,
                   mean: Stats = 0.0, std: Stats = 1.0, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The base checkpoint of a user's torch.export (.pt2) or TorchScript file: its bytes verbatim, the input
    shape (given, or read from an exported program), classes (from a probe), and the normalisation
    (x - mean) / std applied to raw pixels before the program (default none: the program's own)."""
    path = Path(path)
    fmt = programs.sniff_format(path)
    if fmt is None:
        raise CheckpointError(f"{path} is neither a torch.export (.pt2) nor a TorchScript archive")
    data = path.read_bytes()
    module, sig = programs.open_program(data, fmt)
    shape = _program_input_shape(path, fmt, sig, input_shape)
    model = programs.ProgramModel(module, fmt, mean, std, sig.static_batch).eval()
    classes = _probe_classes(path, model, shape)
    if num_classes is not None and num_classes != classes:
        raise CheckpointError(f"{path} returns {classes} outputs per query, not --num-classes {num_classes}")
    args = {"format": fmt, "input_shape": list(shape), "num_classes": classes, "mean": mean, "std": std,
            "static_batch": sig.static_batch}
    info = {"name": path.stem, "source": path.name, "program_format": fmt,
            "normalization": {"mean": mean, "std": std}, **(meta or {})}
    return make_checkpoint(nn.Module(), kind="base", arch=programs.PROGRAM_ARCH, arch_args=args,
                           input_shape=list(shape), num_classes=classes, meta=info, program=programs.to_tensor(data))


def _program_input_shape(path: Path, fmt: str, sig: programs.Signature,
                         given: list[int] | None) -> tuple[int, ...]:
    if given is not None:
        if sig.input_shape is not None and tuple(given) != sig.input_shape:
            raise CheckpointError(f"{path} was exported for inputs {list(sig.input_shape)}, not --input-shape {given}")
        return tuple(int(d) for d in given)
    if sig.input_shape is None:
        what = ("a TorchScript file does not record" if fmt == programs.TORCHSCRIPT
                else "its exported input has no fixed")
        raise CheckpointError(f"{path}: {what} input shape; import it with "
                              f"`parm import-model {path} --input-shape C,H,W --out base.pt`")
    return sig.input_shape


@torch.no_grad()
def _probe_classes(path: Path, model: nn.Module, shape: tuple[int, ...]) -> int:
    """Run the model on a batch of 2 zero images: it must return finite (2, C) scores; C is its class count."""
    try:
        out = model(torch.zeros(2, *shape))
    except Exception as exc:  # a program raises whatever its ops raise on a wrong shape
        raise CheckpointError(f"{path} fails on a batch of inputs {list(shape)}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{path} returns {got} for 2 queries; parm serves models returning (B, classes)")
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"{path} returns non-finite scores for zero images")
    return int(out.shape[1])
