"""The settings of a Ray Serve deployment of this system (the ``args`` of ``rayserve.app:build``,
as ``serve run`` and a KubeRay RayService's serveConfigV2 pass them), checked before anything
starts, and the frontend configuration and deployment layout they imply. No Ray import here.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from frontend.config import MODES, FrontendConfig
from frontend.errors import ConfigError

DATA, PARITY, INGRESS = "parm-data", "parm-parity", "parm-ingress"  # deployment names
ROUTINGS = ("pinned", "ray")
FRONTEND_FIELDS = frozenset(f.name for f in fields(FrontendConfig)) - {"data", "parity", "k", "r", "code", "mode",
                                                                       "host", "port"}


@dataclass(frozen=True)
class RaySettings:
    """``model``/``parity_model``: what ``parm worker --model`` takes (a checkpoint path, a ``.pt2``,
    ``builtin:...``), readable on every Ray node. ``data_replicas`` base-model replicas; coded mode
    adds ``parity_replicas`` parity-model replicas, equal and hedged modes as many extra base
    replicas. ``routing``: ``pinned`` (the frontend picks each query's replica, always in coded and
    hedged modes) or ``ray`` (equal/none: Ray Serve's own router spreads the queries).
    ``frontend``: any other FrontendConfig field (deadline_ms, group_timeout_ms, decode_policy, ...)."""

    model: str
    parity_model: str | None = None
    mode: str = "coded"
    k: int = 2
    r: int = 1
    code: str = "sum"
    data_replicas: int = 2
    parity_replicas: int = 1
    ingress_replicas: int = 1
    routing: str = "pinned"
    app_name: str = "parm"
    max_batch: int = 32
    service_time: str | None = None         # every replica's batches take this long (parm worker --service-time)
    parity_service_time: str | None = None  # the parity model's, when it costs more than the base's
    device: str = "cpu"
    replica_cpus: float = 1.0
    threads: int = 1                         # torch/OpenMP threads per replica
    max_ongoing_requests: int = 1024        # per replica: the frontend bounds load itself (max_pending)
    fault_injection: bool = False            # replicas follow the app's fault board (rayserve.faults); off in prod
    access_log: bool = False                 # Serve's log line per call (each query costs several)
    drain_timeout_s: float = 5.0
    frontend: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.routing not in ROUTINGS:
            raise ConfigError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if self.routing == "ray" and self.mode in ("coded", "hedged"):
            raise ConfigError(f"{self.mode} mode needs routing 'pinned': a group's queries (or a query's "
                              "copies) must reach distinct replicas")
        if self.mode == "coded" and not self.parity_model:
            raise ConfigError("coded mode needs parity_model")
        for name in ("data_replicas", "ingress_replicas", "max_batch", "threads", "max_ongoing_requests"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.parity_replicas < (1 if self.mode in ("coded", "hedged") else 0):
            raise ConfigError(f"{self.mode} mode needs parity_replicas >= 1, got {self.parity_replicas}")
        unknown = set(self.frontend) - FRONTEND_FIELDS
        if unknown:
            raise ConfigError(f"unknown frontend settings {sorted(unknown)}; known: {sorted(FRONTEND_FIELDS)}")
        self.frontend_config()  # the frontend's own checks (k, code, deadlines, ...)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> RaySettings:
        """From a config file's typed args, or ``serve run``'s KEY=VALUE strings (``frontend`` as JSON)."""
        types = {f.name: f.type for f in fields(cls)}
        unknown = set(args) - set(types)
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}; known: {sorted(types)}")
        try:
            return cls(**{name: _typed(name, types[name], value) for name, value in args.items()})
        except TypeError as exc:  # a required setting missing
            raise ConfigError(str(exc)) from None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def data_deployment_replicas(self) -> int:
        """Equal and hedged modes spend the parity budget on more base replicas (equal resources)."""
        return self.data_replicas + (self.parity_replicas if self.mode in ("equal", "hedged") else 0)

    def layout(self) -> list[tuple[str, str, int, str]]:
        """(handle, deployment, worker slots, role the slots serve as) for each model deployment;
        one slot with Ray's routing (it stands for the whole deployment)."""
        slots = 1 if self.routing == "ray" else self.data_deployment_replicas
        out = [("data", DATA, slots, "data")]
        if self.mode == "coded":
            out.append(("parity", PARITY, self.parity_replicas, "parity"))
        return out

    def directory_key(self, deployment: str) -> str:
        return f"{self.app_name}/{deployment}"

    def frontend_config(self) -> FrontendConfig:
        """The frontend's configuration; worker addresses are placeholders ``ray:DEPLOYMENT``."""
        layout = {deployment: slots for _, deployment, slots, _ in self.layout()}
        data = tuple((f"ray:{DATA}", i) for i in range(layout[DATA]))
        parity = tuple((f"ray:{PARITY}", i) for i in range(layout.get(PARITY, 0)))
        if self.mode in ("equal", "hedged"):  # the config counts the extra replicas as parity's budget
            cut = max(1, len(data) - self.parity_replicas)
            data, parity = data[:cut], data[cut:]
        try:
            return FrontendConfig(data=data, parity=parity, k=self.k, r=self.r, code=self.code, mode=self.mode,
                                  **self.frontend)
        except TypeError as exc:
            raise ConfigError(f"frontend settings: {exc}") from None


def _typed(name: str, kind: Any, value: Any) -> Any:
    """A setting given as text (``serve run rayserve.app:build k=4``) -> its field's type."""
    if not isinstance(value, str) or kind in ("str", "str | None"):
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if kind.startswith("dict"):
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError(value)
            return parsed
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a {kind}") from None
    return value
