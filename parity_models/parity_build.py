"""What a parity model is before training: its architecture, its input normalisation (fitted to encoded
queries) and its starting weights, by default the base model's own (ParM: the same architecture, so a
parity query costs one base query whatever k is), for built-in architectures and user programs alike.

Data flow: base checkpoint + code + training images -> **build_parity** -> train.py's training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from coders import Code
from parity_models import programs
from parity_models.errors import SetupError
from parity_models.models import Normalize, build
from parity_models.sizing import SIZED_ARCHS, fit_hidden

INITS = ("base", "scratch")


@dataclass
class ParityModel:
    """A parity model to train: the module, and what its checkpoints record of it."""

    module: nn.Module
    arch: str
    arch_args: dict[str, Any]
    init: str
    program: torch.Tensor | None = None  # the program bytes it runs (arch "program")


def sample_tuples(n: int, k: int, seed: int) -> torch.Tensor:
    """One epoch of k-tuples: k independent permutations side by side, so every image appears once
    at every position: (n, k) indices."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=gen) for _ in range(k)], dim=1)


def _stats(x: torch.Tensor, per_channel: bool) -> tuple[Any, Any]:
    """Mean/std of x (n, *S): scalars, or per channel (lists) for (n, C, H, W)."""
    if per_channel:
        flat = x.transpose(0, 1).flatten(1)  # (C, n * H * W)
        return flat.mean(1).tolist(), flat.std(1).tolist()
    return float(x.mean()), float(x.std())


@torch.no_grad()
def encoded_stats(code: Code, x: torch.Tensor, per_channel: bool, n: int = 8192, seed: int = 0,
                  index: int = 0) -> tuple[Any, Any]:
    """Mean/std of encoded queries (a sum of k images lies in [0, k]), for the parity model's Normalize."""
    idx = sample_tuples(len(x), code.k, seed)[:n].T.to(x.device)  # (k, n)
    return _stats(code.encode(x[idx])[index], per_channel)  # encoded (n, *S)


def matched_norm(base_norm: tuple[Any, Any], data: tuple[Any, Any], encoded: tuple[Any, Any]) -> tuple[Any, Any]:
    """The (mean, std) that makes a base model see encoded queries as it saw images: it computes
    (x - M) / S of images x ~ (mu_x, s_x); encoded e ~ (mu_e, s_e) must map to the same statistics,
    (e - m') / s' with s' = s_e S / s_x and m' = mu_e - (mu_x - M) s_e / s_x. Scalars or per-channel lists."""
    (m, s), (mu_x, s_x), (mu_e, s_e) = ([torch.tensor(v, dtype=torch.float64) for v in pair]
                                        for pair in (base_norm, data, encoded))
    std, mean = s_e * s / s_x, mu_e - (mu_x - m) * s_e / s_x
    as_list = any(isinstance(v, list) for pair in (base_norm, data, encoded) for v in pair)
    return (mean.tolist(), std.tolist()) if as_list else (float(mean), float(std))


def parity_arch(base_ckpt: dict[str, Any], arch: str, stats: tuple[Any, Any], code: Code,
                index: int = 0, cost_budget: float | None = None) -> tuple[str, dict[str, Any]]:
    """(arch, args) of a built-in parity model: the base's own architecture ('same') or a named one;
    'tiled' (concat only) is told the code's k and its row's output weights. ``cost_budget`` (tiled and
    collage only) sizes their per-tile network to at most that many base queries' MACs (sizing.py)."""
    if (arch == "collage") != (code.name == "collage"):
        raise SetupError("the collage code's backup model answers each tile: use --code collage with --arch collage"
                         if arch == "collage" else f"code collage needs --arch collage, not {arch!r}")
    if arch == "same":
        name, args = base_ckpt["arch"], dict(base_ckpt["arch_args"])
    else:
        name, args = arch, {"input_shape": base_ckpt["input_shape"], "num_classes": base_ckpt["num_classes"]}
    if name == "collage":
        args["k"] = code.k
    if name == "tiled":
        if code.name != "concat":
            raise SetupError(f"the tiled parity model reads the concat code's tiles; got code {code.name!r}")
        args.update(k=code.k, weights=[float(w) for w in code.coeffs[index]])
    if name != "linear":  # every other architecture starts with a Normalize layer
        args["mean"], args["std"] = stats
    if cost_budget is not None:
        args["hidden"] = fit_hidden(base_ckpt, name, args, cost_budget)
    return name, args


def resolve_init(init: str | None, same_arch: bool) -> str:
    """None: 'base' when the parity model has the base's architecture, else 'scratch'."""
    if init is None:
        return "base" if same_arch else "scratch"
    if init not in INITS:
        raise SetupError(f"unknown init {init!r}; known: {', '.join(INITS)}")
    if init == "base" and not same_arch:
        raise SetupError("init 'base' copies the base model's weights: it needs --arch same")
    return init


def build_parity(base_ckpt: dict[str, Any], arch: str, init: str | None, code: Code, train_x: torch.Tensor,
                 index: int = 0, seed: int = 0, device: str | torch.device = "cpu",
                 cost_budget: float | None = None) -> ParityModel:
    """The parity model of parity row ``index`` for ``base_ckpt``, on ``device``; train_x (N, *S) images."""
    same = arch == "same"
    init = resolve_init(init, same)
    per_channel = isinstance(base_ckpt["arch_args"].get("mean"), list)
    encoded = encoded_stats(code, train_x, per_channel, seed=seed, index=index)
    if cost_budget is not None and arch not in SIZED_ARCHS:
        raise SetupError(f"--cost-budget sizes the {' and '.join(SIZED_ARCHS)} backup networks; --arch {arch} "
                         "has the base's cost or its own fixed size")
    if same and base_ckpt["arch"] == programs.PROGRAM_ARCH:
        return _program_parity(base_ckpt, init, _stats(train_x, per_channel), encoded, seed, device)
    name, args = parity_arch(base_ckpt, arch, encoded, code, index, cost_budget)
    module = build(name, args)  # scratch weights from the global generator, seeded by train_parity
    if init == "base":
        load_base_weights(module, base_ckpt["state_dict"])
    return ParityModel(module.to(device), name, args, init)


def load_base_weights(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy the base model's weights into ``module`` of the same architecture, all but its Normalize
    statistics (the parity model's are fitted to encoded queries)."""
    norm_keys = {f"{name}.{b}".lstrip(".") for name, m in module.named_modules() if isinstance(m, Normalize)
                 for b in ("mean", "std")}
    missing, unexpected = module.load_state_dict({k: v for k, v in state_dict.items() if k not in norm_keys},
                                                 strict=False)
    if unexpected or set(missing) - norm_keys:
        raise SetupError(f"base weights do not fit the parity model: missing {sorted(set(missing) - norm_keys)}, "
                         f"unexpected {sorted(unexpected)}")


def _program_parity(base_ckpt: dict[str, Any], init: str, data: tuple[Any, Any], encoded: tuple[Any, Any],
                    seed: int, device: str | torch.device) -> ParityModel:
    """A user program's parity model: the same program (its weights trainable) behind a Normalize that makes
    encoded queries look like images to it."""
    args = dict(base_ckpt["arch_args"])
    args["mean"], args["std"] = matched_norm((args.get("mean", 0.0), args.get("std", 1.0)), data, encoded)
    model = programs.build_program_model(base_ckpt["program"], args, {}, device)
    if init == "scratch":
        programs.reinit_parameters(model.program, seed)
    return ParityModel(model, programs.PROGRAM_ARCH, args, init, base_ckpt["program"])
