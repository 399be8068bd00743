"""Which code and model each parity worker of ``parm up`` runs: the ``--parity-model`` list (one
learned parity model per parity index 0..r-1) or the defaults, checked against the base model before
anything starts; ``--code auto`` (the default) is the code those parity models were made for."""
from __future__ import annotations

import math

import re

from frontend.errors import ConfigError

BUILTIN = "builtin:"
# A builtin spec's own parameters (``key=value``) follow commas too: such a piece after a builtin
# spec continues it, anything else starts the next model of the list.
BUILTIN_PARAM = re.compile(r"^[A-Za-z_]\w*=[^/]*$")
AUTO = "auto"


def resolve_code(model: str, given: str | None, code: str, mode: str = "coded") -> str:
    """``--code auto``: the code of the first ``--parity-model`` (a checkpoint's meta says it; builtin
    parity models are the sum code's), else ``sum`` for a builtin base model (its exact parity
    models), else ``berrut``, the one code that needs no trained parity model. Other codes pass."""
    if code != AUTO:
        return code
    if mode != "coded" or model.startswith(BUILTIN) and not given:
        return "sum"  # no parity models to read (replicas), or the builtin's own exact ones
    if not given:
        return "berrut"
    first = split_models(given)[0]
    if first.startswith(BUILTIN):
        return "sum"
    from parity_models import checkpoint  # torch only for checkpoint deployments

    try:
        trained_for = checkpoint.load(first).get("meta", {}).get("code")
    except checkpoint.CheckpointError as exc:
        raise ConfigError(str(exc)) from exc
    if not isinstance(trained_for, str):
        raise ConfigError(f"--parity-model {first} does not say which code it was trained for; pass --code")
    return trained_for


def split_models(text: str) -> list[str]:
    """``--parity-model`` text -> its models: comma-separated checkpoint paths and builtin specs,
    where a builtin's ``key=value`` parameters stay with it: "a.pt,b.pt" -> 2 models, and
    "builtin:linear:parity_k=4,builtin:linear:parity_k=4,parity_index=1" -> 2 models."""
    models: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if models and models[-1].startswith(BUILTIN) and BUILTIN_PARAM.match(piece):
            models[-1] += "," + piece
        else:
            models.append(piece)
    return models


def default_parity_model(model: str, k: int, code: str, index: int = 0) -> str:
    """The parity model of parity ``index`` when none is given: the base model itself for berrut,
    the exact sum-code parity model for the built-in linear model; ConfigError otherwise."""
    if code == "berrut":  # training-free: parity workers run the base model on interpolated queries
        return model
    if model.startswith(("builtin:linear", "builtin:sleep")):
        if code != "sum":
            raise ConfigError("the built-in linear model's exact parity model needs --code sum")
        sep = "," if ":" in model[len(BUILTIN):] else ":"
        return f"{model}{sep}parity_k={k}" + (f",parity_index={index}" if index else "")
    raise ConfigError("--parity-model is required for a checkpoint base model (train one with parm train-parity)")


def parity_models(model: str, given: str | None, k: int, r: int, code: str) -> list[str]:
    """The coded deployment's parity models, model l for parity index l (parity worker i runs
    model i mod r); berrut's parity workers run the base model, which serves any index."""
    if not given:
        return [default_parity_model(model, k, code)] if code == "berrut" else \
            [default_parity_model(model, k, code, index) for index in range(r)]
    models = split_models(given)
    if code == "berrut":
        return models
    if len(models) != r:
        raise ConfigError(f"--parity-model lists {len(models)} parity model(s) ({', '.join(models)}); --r {r} "
                          f"needs {r}, one per parity index 0..{r - 1} in that order, comma-separated")
    for index, spec in enumerate(models):
        trained = _checked_index(model, spec, k, code)
        if trained is not None and trained != index:
            raise ConfigError(f"--parity-model: {spec} is the parity model of parity_index={trained}, but it is "
                              f"listed at position {index}; list the {r} parity models in index order 0..{r - 1}")
    return models


def _checked_index(base: str, spec: str, k: int, code: str) -> int | None:
    """The parity index ``spec`` was trained for (None: not a learned parity model), after
    refusing a checkpoint trained for another base model, k or code."""
    if spec.startswith(BUILTIN):
        from workers.model import parse_builtin  # torch only once a builtin is named

        try:
            _, params = parse_builtin(spec)
            return int(params.get("parity_index", 0)) if "parity_k" in params else None
        except ValueError as exc:
            raise ConfigError(f"--parity-model {spec}: {exc}") from exc
    from parity_models import checkpoint  # torch only for checkpoint deployments

    try:
        parity = checkpoint.load(spec)
        if not base.startswith(BUILTIN):
            checkpoint.check_pair(checkpoint.load(base), parity, k, code)
    except checkpoint.CheckpointError as exc:
        raise ConfigError(str(exc)) from exc
    if parity.get("kind") != "parity":
        return None
    return _meta_index(spec, parity.get("meta") or {})


def _meta_index(spec: str, meta: dict[str, object]) -> int:
    index = meta.get("parity_index", 0)  # absent: a checkpoint from before r >= 2, index 0
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ConfigError(f"--parity-model {spec}: meta parity_index={index!r} is not an index 0, 1, ...")
    return index


def parity_cost(model: str, parity_specs: list[str]) -> float | None:
    """How many base queries one parity query costs (MACs, parity_models.cost), the most costly
    of the parity models; None when it cannot be counted (builtin or exported models)."""
    if model.startswith(BUILTIN) or not parity_specs or any(s.startswith(BUILTIN) for s in parity_specs):
        return None
    import torch

    from parity_models import checkpoint  # torch only for checkpoint deployments
    from parity_models.cost import macs_per_query

    base = checkpoint.load(model)
    shape = tuple(base["input_shape"])
    base_macs = macs_per_query(checkpoint.build_model(base, torch.device("cpu")), shape)
    costs = [macs_per_query(checkpoint.build_model(checkpoint.load(s), torch.device("cpu")), shape)
             for s in dict.fromkeys(parity_specs)]
    if not base_macs or any(c is None for c in costs):
        return None
    return max(c for c in costs if c is not None) / base_macs


def parity_workers(n: int, k: int, r: int, cost: float | None) -> int:
    """Parity workers for n data workers: r per k data workers (at least r), and more when a parity
    query costs more than a base query, so that they keep pace with the data workers."""
    if cost is None or cost <= 1:
        return max(r, r * n // k)
    return max(r, math.ceil(r * n * cost / k - 1e-9))
