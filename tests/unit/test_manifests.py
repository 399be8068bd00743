"""The Kubernetes manifests in deploy/k8s agree with the code: container argv parse with ``parm``'s
own parser, ports and probes line up, and the frontend's worker lists match the StatefulSets."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from frontend.app import create_app
from frontend.config import FrontendConfig, parse_address, parse_addresses
from parm.cli import build_parser
from parm.commands import config_from_args

yaml = pytest.importorskip("yaml", reason="pyyaml is needed to read deploy/k8s (test extra)")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
WORKLOADS = ("Deployment", "StatefulSet")


def load_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


DOCS = load_docs()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in DOCS if d["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return doc


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def parse_container(c: dict[str, Any]) -> argparse.Namespace:
    argv = [*c.get("command", []), *c.get("args", [])]
    assert argv[0] == "parm", argv
    return build_parser().parse_args(argv[1:])


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) -> the number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p.get("name") == port]
    return int(number)


def frontend() -> tuple[dict[str, Any], argparse.Namespace]:
    (deployment,) = [d for d in of_kind("Deployment") if parse_container(container(d)).command == "serve"]
    return deployment, parse_container(container(deployment))


def app_routes() -> set[str]:
    app = create_app(FrontendConfig(data=(("127.0.0.1", 1),), mode="none"))
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def test_every_manifest_parses_and_is_named() -> None:
    assert DOCS, f"no manifests under {K8S}"
    for doc in DOCS:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc


@pytest.mark.parametrize("workload", of_kind("Deployment") + of_kind("StatefulSet"),
                         ids=lambda d: d["metadata"]["name"])
def test_containers_parse_and_listen_where_they_say(workload: dict[str, Any]) -> None:
    c = container(workload)
    args = parse_container(c)
    assert args.command in ("serve", "worker")
    assert args.host == "0.0.0.0"  # reachable from other pods
    assert [p["containerPort"] for p in c["ports"]] == [args.port]
    template = workload["spec"]["template"]
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert c["resources"]["requests"] and c["resources"]["limits"]
    for key in ("readinessProbe", "livenessProbe"):
        probe = c[key]
        if args.command == "serve":
            assert port_number(c, probe["httpGet"]["port"]) == args.port
        else:  # workers speak a binary protocol: the frontend's inference probe gates their traffic
            assert port_number(c, probe["tcpSocket"]["port"]) == args.port


def test_services_select_pods_and_target_the_listening_port() -> None:
    pods = {d["metadata"]["name"]: d for d in of_kind("Deployment") + of_kind("StatefulSet")}
    for svc in of_kind("Service"):
        selected = [w for w in pods.values()
                    if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, svc["metadata"]["name"]
        c = container(selected[0])
        for p in svc["spec"]["ports"]:
            assert port_number(c, p.get("targetPort", p["port"])) == parse_container(c).port


def test_frontend_probes_hit_real_routes_and_prometheus_scrapes_the_http_port() -> None:
    deployment, args = frontend()
    c = container(deployment)
    routes = app_routes()
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and "/ready" in routes
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and "/health" in routes
    notes = deployment["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == args.port
    assert notes["prometheus.io/path"] == "/metrics" and "/metrics" in routes
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > args.drain_timeout_s


def test_frontend_worker_lists_match_the_statefulsets() -> None:
    _, args = frontend()
    cfg = config_from_args(args, parse_addresses(args.data), parse_addresses(args.parity))
    assert cfg.coded
    counts = {}
    for role, addresses in (("data", args.data), ("parity", args.parity)):
        hosts = [parse_address(a) for a in addresses.split(",")]
        services = {h.split(".")[1] for h, _ in hosts}
        assert len(services) == 1, hosts
        (service_name,) = services
        svc = named("Service", service_name)
        assert svc["spec"]["clusterIP"] == "None"  # headless: per-pod DNS names
        (sts,) = [s for s in of_kind("StatefulSet") if s["spec"]["serviceName"] == service_name]
        worker = parse_container(container(sts))
        replicas = sts["spec"]["replicas"]
        assert hosts == [(f"{sts['metadata']['name']}-{i}.{service_name}", worker.port) for i in range(replicas)]
        assert [p["port"] for p in svc["spec"]["ports"]] == [worker.port]
        counts[role] = replicas
    assert counts["parity"] == counts["data"] // cfg.k  # N data, N/k parity


def test_network_policy_admits_the_frontend_to_the_workers() -> None:
    (policy,) = of_kind("NetworkPolicy")
    deployment, _ = frontend()
    selector = policy["spec"]["podSelector"]["matchLabels"]
    workers = [s for s in of_kind("StatefulSet")
               if selector.items() <= s["spec"]["template"]["metadata"]["labels"].items()]
    assert len(workers) == len(of_kind("StatefulSet"))
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert {p["port"] for p in rule["ports"]} == {parse_container(container(s)).port for s in workers}


def test_worker_volumes_exist() -> None:
    claims = {d["metadata"]["name"] for d in of_kind("PersistentVolumeClaim")}
    for sts in of_kind("StatefulSet"):
        for volume in sts["spec"]["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        model = parse_container(container(sts)).model
        mounts = [m["mountPath"] for m in container(sts).get("volumeMounts", [])]
        assert model.startswith("builtin:") or any(model.startswith(m + "/") for m in mounts), (model, mounts)


def test_the_image_copies_every_package_pyproject_installs() -> None:
    """deploy/Dockerfile's ``COPY`` lines name each of ``[tool.setuptools] packages`` (``parm`` too)."""
    from parm.config_file import tomllib

    root = K8S.parents[1]
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {line.split()[1] for line in (root / "deploy" / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert set(packages) <= copied, f"deploy/Dockerfile does not copy {sorted(set(packages) - copied)}"
