"""``rayserve.app:build``: the Ray Serve application builder (``serve run rayserve.app:build
model=...``, ``serve deploy`` of a config file, a KubeRay RayService's serveConfigV2).

An ingress deployment (the frontend, rayserve.ingress) bound to a base-model deployment
(``parm-data``) and, in coded mode, a parity-model deployment (``parm-parity``), all serving this
project's checkpoints, exported programs or builtin models (rayserve.replica).
"""
from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from rayserve.ingress import Ingress
from rayserve.replica import ModelReplica
from rayserve.settings import DATA, INGRESS, PARITY, RaySettings

ROUTER = "rayserve.router.PinnedRouter"


def build(args: dict[str, Any]) -> Application:
    """args: rayserve.settings.RaySettings fields; ConfigError names a bad one."""
    s = RaySettings.from_args(dict(args))
    board = s.app_name if s.fault_injection else None
    data = _model_deployment(s, DATA, s.data_deployment_replicas).bind(
        s.model, s.max_batch, s.service_time, s.device, board)
    parity = None
    if s.mode == "coded":
        parity = _model_deployment(s, PARITY, s.parity_replicas).bind(
            s.parity_model, s.max_batch, s.parity_service_time or s.service_time, s.device, board)
    ingress = serve.deployment(Ingress, name=INGRESS, num_replicas=s.ingress_replicas,
                               max_ongoing_requests=s.max_ongoing_requests, logging_config=_logging(s),
                               ray_actor_options={"num_cpus": s.replica_cpus})
    return ingress.bind(data, parity, s.as_dict())


def _logging(s: RaySettings) -> dict[str, Any]:
    """Serve logs a line per call by default: off unless asked for (a cost on every query)."""
    return {"enable_access_log": s.access_log}


def _model_deployment(s: RaySettings, name: str, replicas: int) -> serve.Deployment:
    options: dict[str, Any] = {
        "name": name, "num_replicas": replicas, "max_ongoing_requests": s.max_ongoing_requests,
        "logging_config": _logging(s),
        # threads set before torch loads, as parm worker --threads does (an OpenMP team per
        # inference thread would otherwise spin through every service-time sleep)
        "ray_actor_options": {"num_cpus": s.replica_cpus, "runtime_env": {"env_vars": {
            "OMP_NUM_THREADS": str(s.threads), "MKL_NUM_THREADS": str(s.threads)}}},
    }
    if s.routing == "pinned":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=ROUTER, request_router_kwargs={"directory": s.directory_key(name)})
    return serve.deployment(ModelReplica, **options)
