"""A user's own model as a self-contained program: a ``torch.export`` archive (.pt2) or TorchScript (.ts/.pt),
wrapped as an ordinary module that takes raw pixels, normalises them and runs the program.

Data flow: model file -> checkpoint.load / import_program (bytes + ``ProgramModel``) -> workers and training;
a parity model of such a base is the same program with fine-tuned weights (parity_build.py).
"""
from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parity_models.errors import CheckpointError
from parity_models.models import Normalize, Stats

EXPORT, TORCHSCRIPT = "torch.export", "torchscript"
PROGRAM_ARCH = "program"  # a checkpoint's arch when its module is a program (its bytes in ckpt["program"])


@dataclass(frozen=True)
class Signature:
    """What a program says about itself: per-query input shape (None: not fixed), classes, fixed batch size."""

    input_shape: tuple[int, ...] | None
    num_classes: int | None
    static_batch: int | None  # the batch size it was exported for when not dynamic, else None


def sniff_format(path: str | Path) -> str | None:
    """EXPORT or TORCHSCRIPT for a program archive, None for anything else (a torch.save checkpoint included):
    all three are zip files; a .pt2 holds ``<name>/archive_format``, TorchScript ``<name>/constants.pkl``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/archive_format") for n in names):
        return EXPORT
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return TORCHSCRIPT
    return None


def to_tensor(data: bytes) -> torch.Tensor:
    """Program bytes as a uint8 tensor, so a checkpoint holding them still loads with weights_only=True."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def to_bytes(program: torch.Tensor) -> bytes:
    return program.detach().cpu().contiguous().numpy().tobytes()


def open_program(data: bytes, fmt: str, device: str | torch.device = "cpu") -> tuple[nn.Module, Signature]:
    """Deserialise a program onto ``device``: (module, what its archive says about its signature)."""
    try:
        if fmt == TORCHSCRIPT:
            return torch.jit.load(io.BytesIO(data), map_location=device), Signature(None, None, None)
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # deserialisers raise RuntimeError, KeyError, ValueError, ... for bad archives
        raise CheckpointError(f"cannot load the {fmt} program: {exc}") from exc
    signature = export_signature(program)
    if torch.device(device).type != "cpu":  # also moves constants and device arguments baked into the graph
        program = torch.export.passes.move_to_device_pass(program, device)
    return program.module(), signature


def export_signature(program: Any) -> Signature:
    """Input shape, classes and batch size from an ExportedProgram's graph: one tensor in (B, *S), one out (B, C)."""
    sig = program.graph_signature
    if len(sig.user_inputs) != 1 or len(sig.user_outputs) != 1:
        raise CheckpointError(f"the exported program takes {len(sig.user_inputs)} inputs and returns "
                              f"{len(sig.user_outputs)} outputs; parm serves one image tensor in, one (B, C) out")
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    val = nodes[sig.user_inputs[0]].meta.get("val")
    if not isinstance(val, torch.Tensor) or val.dim() < 2:
        raise CheckpointError("the exported program's input is not a batch of tensors (B, ...)")
    if val.dtype != torch.float32:
        raise CheckpointError(f"the exported program takes {val.dtype}; export it with float32 inputs")
    dims = list(val.shape)
    static = [isinstance(d, int) for d in dims]
    out_node = next(n for n in program.graph.nodes if n.op == "output").args[0][0]
    out = out_node.meta.get("val") if hasattr(out_node, "meta") else None
    classes = out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() == 2 else None
    return Signature(tuple(int(d) for d in dims[1:]) if all(static[1:]) else None,
                     int(classes) if isinstance(classes, int) else None, int(dims[0]) if static[0] else None)


class ProgramModel(nn.Module):
    """Normalise raw pixels, (x - mean) / std, then run the program: (B, *S) -> (B, C).

    A program exported for a fixed batch size is fed chunks of exactly that size (the last zero-padded).
    An exported graph's train/eval behaviour was fixed when it was exported (``train()`` leaves it as it
    is: torch.export modules refuse it); a TorchScript program follows ``train()``."""

    def __init__(self, program: nn.Module, fmt: str, mean: Stats = 0.0, std: Stats = 1.0,
                 static_batch: int | None = None) -> None:
        super().__init__()
        self.norm = Normalize(mean, std)
        self.program = program
        self.fmt = fmt
        self.static_batch = static_batch

    def train(self, mode: bool = True) -> ProgramModel:
        self.training = mode
        self.norm.train(mode)
        if self.fmt == TORCHSCRIPT:
            self.program.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        b = self.static_batch
        if b is None or x.shape[0] == b:
            return self.program(x)
        chunks = []
        for i in range(0, x.shape[0], b):  # (<=b, *S) -> zero-padded (b, *S) -> keep the real rows
            part = x[i:i + b]
            padded = torch.cat([part, part.new_zeros((b - len(part), *part.shape[1:]))]) if len(part) < b else part
            chunks.append(self.program(padded)[:len(part)])
        return torch.cat(chunks)


def build_program_model(program: torch.Tensor, args: dict[str, Any], state_dict: dict[str, torch.Tensor],
                        device: str | torch.device = "cpu") -> ProgramModel:
    """The module of a program checkpoint: its program bytes, arch_args and (fine-tuned) state, on ``device``."""
    module, _ = open_program(to_bytes(program), args["format"], device)
    model = ProgramModel(module, args["format"], args.get("mean", 0.0), args.get("std", 1.0),
                         args.get("static_batch")).to(device)
    if state_dict:  # a parity model's fine-tuned weights; a base model's are the program's own
        model.load_state_dict(state_dict)
    return model


@torch.no_grad()
def reinit_parameters(model: nn.Module, seed: int) -> None:
    """Fresh weights for a program whose layers are not known by type: >= 2-D parameters as torch's
    Linear/Conv default (Kaiming-uniform, a=sqrt(5)), 1-D ``*bias`` zeros, other 1-D (norm scales) ones."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            fan_in = math.prod(p.shape[1:])
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)
