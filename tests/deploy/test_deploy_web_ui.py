"""The web UI's distributed deployment routes what the embedded runner routes: one origin, the bundle at ``/`` and the
five API prefixes to the five services, at the port each description's addresses use (compose: the containers'
8000; Kubernetes: the Services' port). Checked from the files themselves, with no Docker engine or cluster here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ksef_hub.embedded import SERVICES

ROOT = Path(__file__).resolve().parents[2]
# The five services by name (their compose service, Kubernetes Service and folder) and their embedded prefix.
PREFIXES = {s.name: s.prefix for s in SERVICES}
TEMPLATE = ROOT / "deploy" / "web-ui" / "default.conf.template"
K8S = ROOT / "deploy" / "k8s"


def _routes(port: str) -> dict[str, str]:
    """The template's ``location /prefix/ { proxy_pass ... }`` pairs, rendered as the image's envsubst would."""
    text = TEMPLATE.read_text().replace("${API_PORT}", port)
    return dict(re.findall(r"location (/[a-z]+/)\s*\{\s*proxy_pass (http://[^;]+);", text))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_template_routes_every_prefix_of_the_embedded_runner_to_its_service() -> None:
    routes = _routes("8000")
    assert {prefix.strip("/") for prefix in routes} == {p.strip("/") for p in PREFIXES.values()}
    for service, prefix in PREFIXES.items():
        assert routes[f"/{prefix.strip('/')}/"] == f"http://{service}:8000/", service
    # Only API_PORT is substituted: nginx's own variables would be blanked by a bare envsubst.
    dockerfile = (ROOT / "deploy" / "web-ui" / "Dockerfile").read_text()
    assert "NGINX_ENVSUBST_FILTER=^API_PORT$" in dockerfile
    assert set(re.findall(r"\$\{?([A-Za-z_]+)", TEMPLATE.read_text())) == {"API_PORT"}


def test_compose_points_the_ui_at_the_containers_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    ui = compose["web-ui"]
    assert ui["build"]["dockerfile"] == "deploy/web-ui/Dockerfile"
    for service in PREFIXES:
        ports = compose[service].get("expose", []) + [p.split(":")[-1] for p in compose[service].get("ports", [])]
        assert "8000" in [str(p) for p in ports], f"{service} listens on 8000 in compose"
    assert ui["environment"]["API_PORT"] == "8000"


def test_kubernetes_points_the_ui_at_the_services_port_and_runs_it_unprivileged() -> None:
    (deployment,) = _documents(K8S / "base" / "web-ui" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for service in PREFIXES:
        (svc,) = _documents(K8S / "base" / service / "service.yaml")
        assert str(svc["spec"]["ports"][0]["port"]) == env["API_PORT"], service
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The read-only root needs these two writable: the rendered template and nginx's pid and buffers.
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/nginx/conf.d", "/tmp"}  # noqa: S108
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "location = /healthz" in TEMPLATE.read_text()
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "web-ui" in base["resources"]
    for overlay in ("dev", "prod"):
        images = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())["images"]
        assert "ksef-hub/web-ui" in {i["name"] for i in images}, overlay
    (ingress,) = _documents(K8S / "overlays" / "prod" / "ingress.yaml")
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["backend"]["service"]["name"]) == ("/", "web-ui")
