"""Which model the deployment serves and which workers may serve it: the declared model
(FrontendConfig.model_id), else the one most connected data workers serve (a tie keeps the current
one); each worker is judged again whenever its info or that reference changes, so refusals heal."""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frontend.worker_api import Worker

log = logging.getLogger(__name__)
IDENTITY_KEYS = ("kind", "model_id", "input_shape", "meta")  # what a verdict depends on in a worker's info


@dataclass(frozen=True)
class Reference:
    """The data model every worker must agree with; a field that is None is not checked."""

    model_id: str | None
    input_shape: tuple[int, ...] | None


def reported_shape(info: dict[str, Any]) -> tuple[int, ...] | None:
    shape = info.get("input_shape")
    if isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        return tuple(shape)
    return None


def reported_id(info: dict[str, Any]) -> str | None:
    model_id = info.get("model_id")
    return str(model_id) if model_id else None  # a plain V2 server (e.g. Triton) reports none


def identity(info: dict[str, Any]) -> Reference:
    return Reference(reported_id(info), reported_shape(info))


def fingerprint(info: dict[str, Any]) -> str:
    return json.dumps({key: info.get(key) for key in IDENTITY_KEYS}, sort_keys=True, default=str)


class Agreement:
    def __init__(self, k: int, r: int, code: str, declared: str | None = None) -> None:
        self.k, self.r, self.code = k, r, code
        self.declared = declared          # the model the deployment was started with, if it was told
        self.reference: Reference | None = None
        self._verdicts: dict[Worker, tuple[str, Reference]] = {}  # what each worker was last judged on

    @property
    def source(self) -> str:
        return "declared model" if self.declared else "model most data workers serve"

    def check(self, data: Sequence[Worker], workers: Sequence[Worker]) -> None:
        """Elect the reference, then judge every worker whose fresh info or reference changed."""
        self.reference = self.elect(data)
        if self.reference is None:
            return  # no data worker has reported its model yet: nothing to judge against
        for w in workers:
            if w.info and not w.info_stale:  # a stale one is judged when it reports again
                self._judge(w, self.reference)

    def elect(self, data: Sequence[Worker]) -> Reference | None:
        voters = [w for w in data if w.connected and not w.info_stale and reported_shape(w.info) is not None]
        if self.declared is not None:
            return Reference(self.declared, self._declared_shape(voters))
        # a server without a model id agrees with any model of its shape: it votes only when none reports one
        voters = [w for w in voters if reported_id(w.info)] or voters
        if not voters:
            return self.reference  # nobody to ask (all restarting): keep the last one
        votes = Counter(identity(w.info) for w in voters)
        top = max(votes.values())
        tied = [ref for ref, n in votes.items() if n == top]
        if self.reference in tied:
            return self.reference
        # a new tie (at start-up): the model of the longest-established connection
        return min(tied, key=lambda ref: min(since(w) for w in voters if identity(w.info) == ref))

    def _declared_shape(self, voters: list[Worker]) -> tuple[int, ...] | None:
        serving = ([w for w in voters if reported_id(w.info) == self.declared]
                   or [w for w in voters if reported_id(w.info) is None])
        shapes = Counter(reported_shape(w.info) for w in serving)
        if shapes:
            return shapes.most_common(1)[0][0]
        return self.reference.input_shape if self.reference is not None else None

    def _judge(self, w: Worker, ref: Reference) -> None:
        basis = (fingerprint(w.info), ref)
        if self._verdicts.get(w) == basis:
            return  # nothing changed: the verdict stands (and is not logged again)
        self._verdicts[w] = basis
        reason = self.mismatch(ref, w.role, w.info)
        if reason is not None and reason != w.refused:
            log.error("refusing %s: %s", w.name, reason)
        elif reason is None and w.refused is not None:
            log.warning("%s agrees with the %s again: back in rotation", w.name, self.source)
        w.refused = reason

    def mismatch(self, ref: Reference, role: str, info: dict[str, Any]) -> str | None:
        """Why a worker of ``role`` reporting ``info`` must not serve this deployment, or None."""
        if ref.input_shape is not None and reported_shape(info) != ref.input_shape:
            return f"input shape {info.get('input_shape')} differs from the data model's {list(ref.input_shape)}"
        if role == "data":
            # compared only when both report one: a plain V2 server (e.g. Triton) has no model_id
            model_id = reported_id(info)
            if model_id and ref.model_id and model_id != ref.model_id:
                return f"model {model_id} differs from the {self.source}, {ref.model_id}"
            return None
        return self._parity_mismatch(ref, info)

    def _parity_mismatch(self, ref: Reference, info: dict[str, Any]) -> str | None:
        meta = info.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        expected = {"k": self.k, "code": self.code, "base_id": ref.model_id}
        for key, want in expected.items():
            if key in meta and meta[key] != want:
                return f"parity model was trained for {key}={meta[key]!r}, this deployment has {want!r}"
        index = parity_index(info)
        if index is not None and not 0 <= index < self.r:
            return (f"parity model was trained for parity_index={meta.get('parity_index')!r}, this deployment has "
                    f"r={self.r} (parity indices 0..{self.r - 1})")
        return None


def since(w: Worker) -> float:
    return w.connected_since if w.connected_since is not None else math.inf


def parity_index(info: dict[str, Any]) -> int | None:
    """The parity index a worker's model was trained for (checkpoints before r >= 2 carry none: 0),
    or None when it is not a learned parity model and so can serve any parity slot."""
    if info.get("kind") != "parity":
        return None
    meta = info.get("meta")
    index = meta.get("parity_index", 0) if isinstance(meta, dict) else 0
    return index if isinstance(index, int) and not isinstance(index, bool) else -1  # malformed: no slot, refused
