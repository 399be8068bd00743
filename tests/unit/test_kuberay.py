"""deploy/kuberay/rayservice.yaml agrees with the code: a RayService of KubeRay's v1 API with the
fields the operator requires, whose serveConfigV2 applications build with rayserve.app:build's
settings, on the Ray version pyproject pins, mounting the models claim that deploy/k8s defines.
(tests/ray/test_kuberay_schema.py also checks serveConfigV2 against Ray Serve's own schema.)"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rayserve.settings import RaySettings

yaml = pytest.importorskip("yaml", reason="pyyaml is needed to read deploy/kuberay (test extra)")
ROOT = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())


def pods() -> list[dict[str, Any]]:
    cluster = MANIFEST["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]


def test_is_a_v1_rayservice_with_the_required_fields() -> None:
    assert (MANIFEST["apiVersion"], MANIFEST["kind"]) == ("ray.io/v1", "RayService")
    cluster = MANIFEST["spec"]["rayClusterConfig"]
    assert isinstance(cluster["headGroupSpec"]["rayStartParams"], dict)
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for pod in pods():
        assert pod["containers"] and all(c["name"] and c["image"] for c in pod["containers"])
    # rayStartParams values are strings in the CRD (map[string]string)
    assert all(isinstance(v, str) for v in cluster["headGroupSpec"]["rayStartParams"].values())


def test_ray_version_is_the_pinned_one() -> None:
    pin = re.search(r'"ray\[serve\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin and MANIFEST["spec"]["rayClusterConfig"]["rayVersion"] == pin.group(1)


def test_applications_build_with_valid_settings() -> None:
    config = yaml.safe_load(MANIFEST["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    assert app["import_path"] == "rayserve.app:build"
    settings = RaySettings.from_args(app["args"])  # ConfigError for anything the builder would refuse
    assert settings.model.startswith("/models/") and settings.parity_model.startswith("/models/")
    needed = settings.data_deployment_replicas + settings.parity_replicas + settings.ingress_replicas
    group = MANIFEST["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    cpus_per_pod = float(group["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    assert group["minReplicas"] * cpus_per_pod >= needed * settings.replica_cpus  # every replica fits


def test_every_pod_mounts_the_models_claim() -> None:
    claim = yaml.safe_load((ROOT / "deploy" / "k8s" / "models-pvc.yaml").read_text())["metadata"]["name"]
    for pod in pods():
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
            assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
