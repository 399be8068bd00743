"""Frontend settings as one frozen dataclass, validated at construction with actionable messages.

Mirrored one to one by ``parm serve``'s flags (parm/commands.py): field ``x_y`` is ``--x-y``; the two
secrets are read from files (``--auth-token-file``, ``--worker-secret-file``); ``parm up`` sets data, parity.
"""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass, field

from coders import CODES, CodingError, make_code
from frontend.decode_policy import POLICIES, DecodePolicy
from frontend.errors import ConfigError

MODES = ("coded", "equal", "hedged", "none")


Address = tuple[str, int] | str  # (host, port) of a parm worker, or "v2+http://host:port/model"
V2_SCHEME = "v2+http://"


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' -> (host, port); ConfigError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"worker address {text!r} is not HOST:PORT")
    return host, int(port)


def parse_v2_address(address: str) -> tuple[str, int, str]:
    """'v2+http://host:port/model' -> (host, port, model); ConfigError otherwise."""
    if not address.startswith(V2_SCHEME):
        raise ConfigError(f"V2 worker address {address!r} does not start with {V2_SCHEME}")
    hostport, _, model = address[len(V2_SCHEME):].partition("/")
    if not model or "/" in model:
        raise ConfigError(f"V2 worker address {address!r} is not v2+http://HOST:PORT/MODEL")
    host, port = parse_address(hostport)
    return host, port, model


def parse_worker(text: str) -> Address:
    """A worker address: 'host:port' (parm worker) or 'v2+http://host:port/model' (any Open
    Inference Protocol server: Triton, MLServer, KServe runtimes)."""
    text = text.strip()
    if text.startswith(V2_SCHEME):
        parse_v2_address(text)
        return text
    return parse_address(text)


def parse_addresses(text: str) -> tuple[Address, ...]:
    return tuple(parse_worker(a) for a in text.split(",") if a.strip())


@dataclass(frozen=True)
class FrontendConfig:
    data: tuple[Address, ...]
    parity: tuple[Address, ...] = ()
    k: int = 2
    r: int = 1                      # parity queries per group: up to r missing outputs decoded
    code: str = "concat"
    mode: str = "coded"
    model_name: str = "parm"        # the model's name on the V2 API (/v2/models/{name})
    host: str = "127.0.0.1"
    port: int = 8080
    predict_port: int | None = None  # also POST /predict alone on this port, lean (frontend.predict_listener)
    deadline_ms: float = 1000.0
    max_deadline_ms: float = 60_000.0
    group_timeout_ms: float = 20.0
    hedge_delay_ms: float | None = None   # hedged mode: fixed delay; None: the percentile below
    hedge_percentile: float = 95.0
    decode_policy: str | None = None  # adaptive | eager | grace; None: grace if decode_grace_ms > 0, else adaptive
    decode_grace_ms: float = 0.0   # grace policy: wait this long for the real output (never past the deadline)
    decode_quantile: float = 95.0  # adaptive: an output is overdue past decode_slack x this latency percentile
    decode_slack: float = 1.25     # ... of the worker it was sent to
    hedge_fallback: bool = True    # coded: re-send an overdue query its group cannot decode to a spare worker
    default_output: tuple[float, ...] | None = None
    max_pending: int = 4096
    max_queries_per_request: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    auth_token: str | None = field(default=None, repr=False)  # bearer token the HTTP API requires, if set
    worker_secret: str | None = field(default=None, repr=False)  # shared secret of the workers' handshake
    health_interval_s: float = 1.0
    health_timeout_s: float = 1.0
    connect_timeout_s: float = 2.0
    retry_backoff_s: float = 0.005  # a failed send is retried after this x 2**attempt
    # the declared model: data workers must serve this model_id, parity workers be trained for it (base_id);
    # None: the model most connected data workers serve (frontend.agreement)
    model_id: str | None = None
    trace_file: str | None = None   # write each group's events here as JSON lines at shutdown (frontend.trace)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.data:
            raise ConfigError("at least one data worker is required (--data HOST:PORT,...)")
        if self.predict_port is not None and not 0 <= self.predict_port < 65536:
            raise ConfigError(f"predict port must be in 0..65535, got {self.predict_port}")
        if self.predict_port and self.predict_port == self.port:  # with SO_REUSEPORT both would bind it
            raise ConfigError(f"--predict-port must differ from --port ({self.port})")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.r < 1:
            raise ConfigError(f"r must be >= 1, got {self.r}")
        if self.mode == "coded":
            if self.k < 2:
                raise ConfigError("coded mode needs k >= 2 (k=1 is plain replication: use --mode equal)")
            if not self.parity:
                raise ConfigError("coded mode needs at least one parity worker (--parity HOST:PORT,...)")
            if self.code not in CODES:
                raise ConfigError(f"unknown code {self.code!r}; known: {', '.join(sorted(CODES))}")
            try:
                make_code(self.code, self.k, self.r)
            except CodingError as exc:
                raise ConfigError(f"--code {self.code} --k {self.k} --r {self.r}: {exc}") from exc
        for name in ("deadline_ms", "group_timeout_ms", "health_interval_s", "health_timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.retry_backoff_s < 0:
            raise ConfigError(f"retry_backoff_s must be >= 0, got {self.retry_backoff_s}")
        if self.hedge_delay_ms is not None and self.hedge_delay_ms < 0:
            raise ConfigError(f"hedge_delay_ms must be >= 0, got {self.hedge_delay_ms}")
        if not 0 < self.hedge_percentile < 100:
            raise ConfigError(f"hedge_percentile must be in (0, 100), got {self.hedge_percentile}")
        if self.mode == "hedged" and len(self.all_data_workers) < 2:
            raise ConfigError("hedged mode needs at least two replicas (--data plus --parity as extra replicas)")
        self._check_decode_policy()
        if self.trace_file is not None and not Path(self.trace_file).resolve().parent.is_dir():
            raise ConfigError(f"trace_file {self.trace_file!r}: its folder does not exist")
        if self.deadline_ms > self.max_deadline_ms:
            raise ConfigError(f"deadline_ms {self.deadline_ms} exceeds max_deadline_ms {self.max_deadline_ms}")
        for name in ("max_pending", "max_queries_per_request", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _check_decode_policy(self) -> None:
        if self.decode_policy is None:  # frozen: resolve the default once, here
            object.__setattr__(self, "decode_policy", "grace" if self.decode_grace_ms > 0 else "adaptive")
        if self.decode_policy not in POLICIES:
            raise ConfigError(f"decode_policy must be one of {POLICIES}, got {self.decode_policy!r}")
        if self.default_output is not None and not (
                self.default_output and all(math.isfinite(v) for v in self.default_output)):
            # its length is checked against the model's outputs once a worker reports them (Service)
            raise ConfigError(f"default_output must be one or more finite numbers, got {list(self.default_output)}")
        if self.decode_grace_ms < 0:
            raise ConfigError(f"decode_grace_ms must be >= 0, got {self.decode_grace_ms}")
        if self.decode_grace_ms > 0 and self.decode_policy != "grace":
            raise ConfigError(f"decode_grace_ms applies to the grace policy, not {self.decode_policy!r}")
        if not 0 < self.decode_quantile < 100:
            raise ConfigError(f"decode_quantile must be in (0, 100), got {self.decode_quantile}")
        if self.decode_slack < 1:
            raise ConfigError(f"decode_slack must be >= 1 (below 1 decodes outputs that are on time), "
                              f"got {self.decode_slack}")

    def decode(self) -> DecodePolicy:
        """The decode policy these settings describe."""
        assert self.decode_policy is not None
        return DecodePolicy(self.decode_policy, self.decode_grace_ms / 1000, self.decode_quantile, self.decode_slack)

    @property
    def coded(self) -> bool:
        return self.mode == "coded"

    @property
    def all_data_workers(self) -> tuple[Address, ...]:
        """Data workers to use: in ``equal`` and ``hedged`` modes the parity budget serves as extra
        replicas of the base model."""
        return self.data + self.parity if self.mode in ("equal", "hedged") else self.data
