"""deploy/kuberay/rayservice.yaml's serveConfigV2 is a valid Ray Serve config by Ray's own schema
(the one ``serve deploy`` and the KubeRay operator's Serve agent apply), and its application
builds. Runs in .venv-ray."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: scripts/setup_ray.sh, then .venv-ray runs these")
import yaml  # noqa: E402
from ray.serve import Application  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

from rayserve.app import build  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kuberay" / "rayservice.yaml"


def test_serve_config_passes_rays_schema_and_builds() -> None:
    config = yaml.safe_load(yaml.safe_load(MANIFEST.read_text())["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.parse_obj(config)
    (app,) = schema.applications
    assert isinstance(build(app.args), Application)  # the builder Serve calls: settings checked, deployments bound


def test_example_serve_config_passes_rays_schema_and_builds() -> None:
    schema = ServeDeploySchema.parse_obj(yaml.safe_load((ROOT / "examples" / "ray" / "serve.yaml").read_text()))
    assert all(isinstance(build(app.args), Application) for app in schema.applications)
