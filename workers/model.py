"""What a worker serves: a checkpoint, a user's torch.export (.pt2) file, or a builtin model, wrapped as
numpy (B, *S) -> (B, C).

Data flow: frontend -> worker_client -> [wire] -> workers.server -> **workers.model** (torch).
Builtins (``builtin:linear``, ``builtin:sleep``) need no files, so tests and latency studies
can start workers instantly with identical weights in every process. ``parse_service_time`` gives
any model a calibrated per-batch service time (``parm worker --service-time``) for benchmarks.
"""
from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from coders.base import coefficient_rows
from parity_models import checkpoint
from parity_models.device import resolve_device
from parity_models.models import Linear
from workers.specs import parse_named

BUILTIN_PREFIX = "builtin:"
LINEAR_INPUT_SHAPE = (1, 28, 28)  # MNIST-sized, like ParM's smallest experiments
LINEAR_CLASSES = 10
# Keys each builtin accepts; "sleep" is "linear" with a mandatory-looking alias for the service time.
BUILTIN_KEYS: dict[str, frozenset[str]] = {
    "linear": frozenset({"seed", "parity_k", "parity_index", "sleep_ms", "jitter_ms"}),
    "sleep": frozenset({"seed", "parity_k", "parity_index", "ms", "sleep_ms", "jitter_ms"}),
}


@dataclass
class LoadedModel:
    """A model ready to serve. ``predict`` maps float32 (B, *input_shape) -> float32 (B, num_classes)."""

    predict: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int, ...]
    num_classes: int
    info: dict[str, Any]
    # Seconds of extra service time per batch (0 = none); called once per batch so jitter varies.
    service_time: Callable[[], float] = field(default=lambda: 0.0)
    # Calibrated mode (--service-time): the *total* seconds each batch takes; None = off.
    batch_time: Callable[[], float] | None = None

    def run_batch(self, inputs: np.ndarray, slow: float = 1.0) -> np.ndarray:
        """Predict, then sleep; blocking, so call it from a thread.

        Without ``batch_time``: real inference, then ``service_time()`` extra (additive).
        With it: the batch takes max(drawn, inference) in total (the rest is slept after the
        real inference). Either way a ``slow`` factor F stretches the whole service time S
        (inference + sleep) to F*S by sleeping (F-1)*S more."""
        t0 = time.perf_counter()
        outputs = self.predict(inputs)
        inference = time.perf_counter() - t0
        if self.batch_time is not None:
            total = max(self.batch_time(), inference)
        else:
            total = inference + max(self.service_time(), 0.0)
        remaining = slow * total - inference
        if remaining > 0:
            time.sleep(remaining)
        return outputs


def load_model(spec: str, device: str = "cpu") -> LoadedModel:
    """``spec`` is a checkpoint path (a parm checkpoint, or a .pt2 saved by torch.export.save, read by
    parity_models.checkpoint.load) or ``builtin:NAME[:key=val,...]``; see ``BUILTIN_KEYS``."""
    dev = resolve_device(device)
    if spec.startswith(BUILTIN_PREFIX):
        return _load_builtin(spec, dev)
    return _load_checkpoint(Path(spec), dev)


def make_predict(module: nn.Module, device: str | torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap ``module`` as numpy -> numpy; runs under inference_mode and returns CPU float32."""
    def predict(inputs: np.ndarray) -> np.ndarray:
        # Frames decode to read-only views; torch.from_numpy wants a writable, contiguous array.
        x = np.require(inputs, dtype=np.float32, requirements=["C", "W"])
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(device))  # (B, C)
            return out.float().cpu().numpy()
    return predict


def _load_checkpoint(path: Path, device: torch.device) -> LoadedModel:
    ckpt = checkpoint.load(path)
    module = checkpoint.build_model(ckpt, device)
    input_shape = tuple(int(d) for d in ckpt["input_shape"])
    meta = plain(ckpt.get("meta") or {})
    if not isinstance(meta, dict):
        meta = {"value": meta}
    info = {"name": str(meta.get("name", path.stem)), "kind": str(ckpt["kind"]),
            "model_id": checkpoint.model_id(ckpt), "input_shape": list(input_shape),
            "num_classes": int(ckpt["num_classes"]), "meta": meta, "source": str(path)}
    return LoadedModel(make_predict(module, device), input_shape, int(ckpt["num_classes"]), info)


def parse_builtin(spec: str) -> tuple[str, dict[str, str]]:
    """``builtin:NAME[:k=v,...]`` -> (NAME, {k: v}); ValueError names what exists."""
    return parse_named(spec, BUILTIN_KEYS, "builtin model", prefix=BUILTIN_PREFIX)


def _number(params: dict[str, str], key: str, default: float, kind: type = float, minimum: float = 0) -> Any:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"builtin parameter {key}={raw!r} is not a valid {kind.__name__}") from None
    if value < minimum:
        raise ValueError(f"builtin parameter {key}={raw!r} must be >= {minimum}")
    return value


def _build_linear(seed: int, bias_scale: float) -> nn.Module:
    """Same seed -> same weights in every process; fork_rng keeps the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Linear(LINEAR_INPUT_SHAPE, LINEAR_CLASSES, bias_scale=bias_scale).eval()


def linear_bias_scale(parity_k: int, parity_index: int) -> float:
    """The exact sum-code parity model l of F(x) = Wx + b is W(sum_i C[l,i] x_i) + (sum_i C[l,i]) b,
    C = coefficient_rows: the same weights with the bias scaled by row l's sum (k for l = 0). For
    k >= 2 the rows' sums differ, so every index has its own model id."""
    return float(coefficient_rows(parity_k, parity_index + 1)[parity_index].sum())


def _builtin_id(seed: int, bias_scale: float) -> str:
    model = _build_linear(seed, bias_scale)
    args = {"input_shape": list(LINEAR_INPUT_SHAPE), "num_classes": LINEAR_CLASSES, "bias_scale": float(bias_scale)}
    return checkpoint.model_id(checkpoint.make_checkpoint(
        model, kind="base", arch="linear", arch_args=args,
        input_shape=list(LINEAR_INPUT_SHAPE), num_classes=LINEAR_CLASSES))


def _load_builtin(spec: str, device: torch.device) -> LoadedModel:
    name, params = parse_builtin(spec)
    seed = _number(params, "seed", 0, int)
    parity_k = _number(params, "parity_k", 0, int, minimum=1)  # 0 = not a parity model
    parity_index = _number(params, "parity_index", 0, int)
    if "parity_index" in params and not parity_k:
        raise ValueError(f"builtin parameter parity_index needs parity_k in {spec!r}")
    scale = linear_bias_scale(parity_k, parity_index) if parity_k else 1.0
    sleep_ms = _number(params, "ms", _number(params, "sleep_ms", 5.0 if name == "sleep" else 0.0))
    jitter_ms = _number(params, "jitter_ms", 0.0)
    module = _build_linear(seed, scale).to(device)
    meta: dict[str, Any] = {"seed": seed, "sleep_ms": sleep_ms, "jitter_ms": jitter_ms}
    if parity_k:
        # Sum-code parity l of the linear model: W(sum_i C[l,i] x_i) + scale*b = sum_i C[l,i] F(x_i).
        meta.update(k=parity_k, code="sum", parity_index=parity_index, base_id=_builtin_id(seed, 1))
    info = {"name": spec, "kind": "parity" if parity_k else "base", "model_id": _builtin_id(seed, scale),
            "input_shape": list(LINEAR_INPUT_SHAPE), "num_classes": LINEAR_CLASSES, "meta": meta}
    rng = random.Random(seed)
    def service_time() -> float:  # seconds; uniform jitter in [0, jitter_ms] on top of sleep_ms
        return (sleep_ms + (rng.uniform(0, jitter_ms) if jitter_ms else 0.0)) / 1000.0
    return LoadedModel(make_predict(module, device), LINEAR_INPUT_SHAPE, LINEAR_CLASSES, info, service_time)


SERVICE_TIME_KEYS: dict[str, frozenset[str]] = {
    "fixed": frozenset({"ms", "scale"}),
    "exp": frozenset({"mean_ms", "seed", "scale"}),
    "lognormal": frozenset({"median_ms", "sigma", "seed", "scale"}),
    "file": frozenset(),
}


def parse_service_time(spec: str) -> Callable[[], float]:
    """``--service-time`` text -> a sampler of per-batch service times in seconds.

    fixed:ms=F | exp:mean_ms=F[,seed=N] | lognormal:median_ms=F,sigma=S[,seed=N] |
    file:PATH.json (a JSON list of milliseconds, or {"samples_ms": [...]}; drawn uniformly
    with replacement, i.e. the empirical distribution). ``scale=C`` (not for file:) multiplies every
    draw: a model that costs C base queries. ValueError names the problem."""
    name, _, rest = spec.partition(":")
    if name == "file":
        return _empirical_sampler(Path(rest))
    _, params = parse_named(spec, SERVICE_TIME_KEYS, "service time")
    scale = float(_number(params, "scale", 1.0)) if "scale" in params else 1.0
    if scale <= 0:
        raise ValueError(f"service time {spec!r}: scale must be > 0")
    draw = _sampler(name, params, spec)
    return draw if scale == 1.0 else (lambda: scale * draw())


def _sampler(name: str, params: dict[str, str], spec: str) -> Callable[[], float]:
    # Unseeded by default, so identical workers do not straggle in lockstep.
    rng = random.Random(_number(params, "seed", 0, int) if "seed" in params else None)
    if name == "fixed":
        ms = _required(params, "ms", spec)
        return lambda: ms / 1000.0
    if name == "exp":
        mean = _required(params, "mean_ms", spec)
        return lambda: rng.expovariate(1.0 / mean) / 1000.0 if mean > 0 else 0.0
    median, sigma = _required(params, "median_ms", spec), _required(params, "sigma", spec)
    mu = math.log(median) if median > 0 else -math.inf
    return lambda: rng.lognormvariate(mu, sigma) / 1000.0 if median > 0 else 0.0


def _required(params: dict[str, str], key: str, spec: str) -> float:
    if key not in params:
        raise ValueError(f"service time {spec!r} needs {key}=")
    return float(_number(params, key, 0.0))


def _empirical_sampler(path: Path) -> Callable[[], float]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read service-time file {path}: {exc}") from None
    samples = raw.get("samples_ms") if isinstance(raw, dict) else raw
    if not isinstance(samples, list) or not samples or not all(
            isinstance(v, (int, float)) and v >= 0 for v in samples):
        raise ValueError(f"service-time file {path}: want a non-empty list of ms >= 0 (or {{\"samples_ms\": [...]}})")
    rng = random.Random(0)
    seconds = [float(v) / 1000.0 for v in samples]
    return lambda: rng.choice(seconds)


def plain(obj: Any) -> Any:
    """Recursively convert checkpoint metadata to JSON/msgpack-safe values (tensors -> lists)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        return plain(obj.tolist())
    return str(obj)
