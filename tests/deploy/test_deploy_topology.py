"""docker-compose.yml and the Kustomize overlays describe one topology, and both are valid, checked offline:

- every rendered document of both overlays (conftest.render, no kustomize binary) against the Kubernetes 1.33 schemas
  bundled by kubernetes-validate (strict: unknown fields fail), the KafkaTopics against Strimzi's CRD schema and
  docker-compose.yml against the Compose Specification (both vendored in schemas/, origins in schemas/README.md);
- the same deployables in both (one image per service, built from the one Dockerfile with SERVICE), each service's
  migrate step before it, health checks on /healthz and /readyz, non-root everywhere, requests and a memory limit
  on every container, a PodDisruptionBudget per Deployment, prod replicated (an HPA with at least 2, or 2 replicas);
- the NetworkPolicies: default deny, DNS, calls exactly as the settings' URLs say, and the egress rule written in
  deploy/k8s/base/network/kustomization.yaml (only ksef-gateway and notify-svc reach public addresses, on the ports
  PUBLIC_EGRESS lists);
- a KafkaTopic for every topic of platform_common.contracts.TOPICS and its dead-letter twin, and nothing else, with
  the partitions and replicas the services themselves would create them with.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from ksef_hub.embedded import SERVICES as EMBEDDED
from platform_common.contracts import TOPICS
from platform_common.messaging.dispatch import DLT_SUFFIX
from platform_common.settings import KafkaSettings

Document = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
KUBERNETES_VERSION = "1.33"
OVERLAYS = ("dev", "prod")

SERVICES = tuple(s.name for s in EMBEDDED)  # the five Python services
WEB_UI = "web-ui"
SIMULATOR = "ksef-sim"  # the KSeF simulator: compose and the dev overlay only, never prod
IMAGE_PREFIX = "ksef-hub/"
# The only pods with egress to public addresses, and on which ports (base/network/kustomization.yaml says why).
PUBLIC_EGRESS = {
    ("ksef-gateway", 443),
    ("notify-svc", 443),
    ("notify-svc", 25),
    ("notify-svc", 465),
    ("notify-svc", 587),
}
# Not public: private (RFC 1918), shared/CGNAT (RFC 6598), link-local (cloud metadata), loopback.
NON_PUBLIC = tuple(
    ipaddress.IPv4Network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8")
)
MONITORING_NAMESPACE = {"ksef-hub.io/monitoring": "true"}
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# ----------------------------------------------------------------------------------------------- helpers


def _of(docs: list[Document], kind: str) -> dict[str, Document]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod(workload: Document) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers(workload: Document) -> list[dict[str, Any]]:
    pod = _pod(workload)
    containers: list[dict[str, Any]] = pod.get("initContainers", []) + pod["containers"]
    return containers


def _image_name(image: str) -> str:
    """``ksef-hub/auth-svc:0.1.0`` -> ``auth-svc``."""
    assert image.startswith(IMAGE_PREFIX), image
    return image.removeprefix(IMAGE_PREFIX).split(":", 1)[0]


def _workloads(docs: list[Document]) -> Iterator[Document]:
    return (d for d in docs if d["kind"] in ("Deployment", "Job"))


def _config(docs: list[Document], deployment: Document) -> dict[str, str]:
    """The ConfigMap data a Deployment's first container loads with envFrom."""
    maps = _of(docs, "ConfigMap")
    data: dict[str, str] = {}
    for source in _containers(deployment)[0].get("envFrom", []):
        if "configMapRef" in source:
            data.update(maps[source["configMapRef"]["name"]]["data"])
    return data


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are understood here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _policies_for(docs: list[Document], labels: dict[str, str], policy_type: str) -> list[Document]:
    return [
        p
        for p in _of(docs, "NetworkPolicy").values()
        if policy_type in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
    ]


def _ports(rule: dict[str, Any]) -> set[int | str]:
    """A rule's TCP/UDP ports; ``"*"`` when it names none (every port)."""
    if "ports" not in rule:
        return {"*"}
    return {p["port"] for p in rule["ports"]}


def _admits_public(peer: dict[str, Any]) -> bool:
    """Whether a NetworkPolicy peer lets through some public address. Pod and namespace selectors mean pods of the
    cluster; an ipBlock is public when its CIDR minus its exceptions minus the non-public ranges leaves anything."""
    if "ipBlock" not in peer:
        return False
    left = [ipaddress.IPv4Network(peer["ipBlock"]["cidr"])]
    for hole in [ipaddress.IPv4Network(e) for e in peer["ipBlock"].get("except", [])] + list(NON_PUBLIC):
        rest: list[ipaddress.IPv4Network] = []
        for net in left:
            if net.subnet_of(hole):
                continue
            rest.extend(net.address_exclude(hole) if hole.subnet_of(net) else [net])
        left = rest
    return bool(left)


def _rule_admits_public(rule: dict[str, Any]) -> bool:
    peers = rule.get("to", [])
    return not peers or any(_admits_public(p) for p in peers)  # no `to`: every destination


def _pod_labels(deployment: Document) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _same_namespace_pods(peers: list[dict[str, Any]], deployments: dict[str, Document]) -> set[str]:
    """The Deployments of this namespace a rule's peers select (peers with a namespaceSelector are elsewhere)."""
    return {
        name
        for peer in peers
        if "podSelector" in peer and "namespaceSelector" not in peer
        for name, d in deployments.items()
        if _selects(peer["podSelector"], _pod_labels(d))
    }


def _url_targets(docs: list[Document], value: str) -> Iterator[tuple[str, int]]:
    """The Deployments and pod ports an http(s) URL in a setting reaches, through its Service: ``http://auth-svc/x``
    is Service auth-svc port 80, whose targetPort ``http`` is the pod's port 8000."""
    services, deployments = _of(docs, "Service"), _of(docs, "Deployment")
    for host, port in re.findall(r"https?://([a-z0-9-]+)(?::(\d+))?(?=[/\"]|$)", value):
        if host not in services:
            continue
        service = services[host]
        (sport,) = [p for p in service["spec"]["ports"] if p["port"] == int(port or 80)]
        for name, d in deployments.items():
            if _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels(d)):
                (container,) = _pod(d)["containers"]
                target = sport["targetPort"]
                if isinstance(target, str):
                    (target,) = [p["containerPort"] for p in container["ports"] if p["name"] == target]
                yield name, int(target)


def _calls(docs: list[Document]) -> dict[str, set[tuple[str, int]]]:
    """Who calls whom, from the settings: each Deployment's ConfigMap and env values, and the web UI's nginx template
    (it proxies every API prefix to its service's Service)."""
    deployments = _of(docs, "Deployment")
    calls: dict[str, set[tuple[str, int]]] = {name: set() for name in deployments}
    for name, d in deployments.items():
        values = list(_config(docs, d).values()) + [
            str(e["value"]) for c in _containers(d) for e in c.get("env", []) if "value" in e
        ]
        for value in values:
            calls[name].update(_url_targets(docs, value))
    template = (ROOT / "deploy" / "web-ui" / "default.conf.template").read_text()
    (api_port,) = [e["value"] for e in _containers(deployments[WEB_UI])[0]["env"] if e["name"] == "API_PORT"]
    for upstream in re.findall(r"proxy_pass (http://[^;]+);", template):
        calls[WEB_UI].update(_url_targets(docs, upstream.replace("${API_PORT}", api_port)))
    return calls


def _compose_images() -> dict[str, str]:
    """Compose service -> the name of the image it runs, for the images this repository builds."""
    return {
        name: _image_name(s["image"]) for name, s in COMPOSE.items() if str(s.get("image", "")).startswith(IMAGE_PREFIX)
    }


def _strict(schema: Any) -> Any:
    """What ``kubectl apply --validate=strict`` does with a structural CRD schema: fields it does not declare fail
    (an API server would silently prune them), except where it keeps unknown fields."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


# ----------------------------------------------------------------------------------------------- validity


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_is_valid_kubernetes(rendered: dict[str, list[Document]], overlay: str) -> None:
    errors = []
    for doc in rendered[overlay]:
        if doc["apiVersion"].startswith("kafka.strimzi.io/"):
            continue  # not a Kubernetes type: the next test
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_are_valid_strimzi_resources(rendered: dict[str, list[Document]], overlay: str) -> None:
    schema = _strict(json.loads((SCHEMAS / "strimzi-kafkatopic-v1beta2.json").read_text()))
    validator = jsonschema.Draft7Validator(schema)  # OpenAPI v3 schemas are a subset of draft 4..7
    topics = list(_of(rendered[overlay], "KafkaTopic").values())
    assert topics
    errors = []
    for doc in topics:
        name = doc["metadata"]["name"]
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2", name
        errors += [f"{name}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
        if not (DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253):
            errors.append(f"{name}: not a DNS subdomain (use spec.topicName for the topic's real name)")
        if "strimzi.io/cluster" not in doc["metadata"].get("labels", {}):
            errors.append(f"{name}: no strimzi.io/cluster label, so no Topic Operator picks it up")
    assert not errors, "\n".join(errors)


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((SCHEMAS / "compose_spec.json").read_text())
    # The one addition to the 2021 schema (schemas/README.md): the top-level project name of the current spec.
    assert "name" not in schema["properties"], "the vendored schema knows `name` now: drop this addition"
    schema["properties"]["name"] = {"type": "string"}
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message}"
        for e in jsonschema.Draft201909Validator(schema).iter_errors(document)
    ]
    assert not errors, "\n".join(errors)


# ----------------------------------------------------------------------------------------------- topology parity


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_compose_and_kubernetes_run_the_same_images(rendered: dict[str, list[Document]], overlay: str) -> None:
    compose = _compose_images()
    for name, image in compose.items():
        # Compose runs each image under the service's own name, or as its `<service>-migrate` step.
        assert image == name.removesuffix("-migrate"), name
    deployments = _of(rendered[overlay], "Deployment")
    for name, d in deployments.items():
        assert [_image_name(c["image"]) for c in _containers(d)] == [name], f"{name}: one image, the service's own"
    expected = set(compose.values()) - ({SIMULATOR} if overlay == "prod" else set())
    assert set(deployments) == expected
    assert set(SERVICES) | {WEB_UI} <= expected


def test_compose_builds_each_image_from_the_one_recipe() -> None:
    for name, image in _compose_images().items():
        build = COMPOSE[name]["build"]
        assert build["context"] == ".", name
        if image == WEB_UI:
            assert build["dockerfile"] == "deploy/web-ui/Dockerfile"
        else:
            assert "dockerfile" not in build, name  # the root Dockerfile
            assert build["args"] == {"SERVICE": image}, name
        assert COMPOSE[name]["image"] == f"{IMAGE_PREFIX}{image}:dev", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_migrates_before_it_serves(rendered: dict[str, list[Document]], overlay: str) -> None:
    for service in SERVICES:
        migrate = COMPOSE[f"{service}-migrate"]
        assert migrate["image"] == COMPOSE[service]["image"] and migrate["command"] == ["migrate"], service
        assert migrate["restart"] == "no", service
        depends = COMPOSE[service]["depends_on"][f"{service}-migrate"]
        assert depends == {"condition": "service_completed_successfully"}, service
    jobs = _of(rendered[overlay], "Job")
    deployments = _of(rendered[overlay], "Deployment")
    assert set(jobs) == {f"{s}-migrate" for s in SERVICES}
    for service in SERVICES:
        job = jobs[f"{service}-migrate"]
        (container,) = _containers(job)
        assert container["args"] == ["migrate"], service
        assert container["image"] == _containers(deployments[service])[0]["image"], f"{service}: same image and tag"
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate", "README applies Jobs by label"


def _compose_probe(name: str) -> str:
    check = COMPOSE[name].get("healthcheck", {})
    assert not check.get("disable"), f"{name}: health check disabled"
    return " ".join(check.get("test", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_health_checks_ask_healthz_and_readyz(rendered: dict[str, list[Document]], overlay: str) -> None:
    for service in SERVICES:
        # Compose's "healthy" gates its dependants, so it means ready; Kubernetes splits liveness and readiness.
        assert "http://127.0.0.1:8000/readyz" in _compose_probe(service), service
    for name in (WEB_UI, SIMULATOR):
        assert "/healthz" in _compose_probe(name), name  # nginx and the simulator have nothing to be ready for
    for name, deployment in _of(rendered[overlay], "Deployment").items():
        (container,) = _pod(deployment)["containers"]
        liveness = container["livenessProbe"]["httpGet"]
        readiness = container["readinessProbe"]["httpGet"]
        assert liveness["path"] == "/healthz", name
        assert readiness["path"] == ("/readyz" if name in SERVICES else "/healthz"), name
        assert {liveness["port"], readiness["port"]} == {"http"}, name
    for name, check in ((n, c) for n, c in COMPOSE.items() for c in [c] if "depends_on" in c):
        for target, condition in check["depends_on"].items():
            if condition.get("condition") == "service_healthy":
                assert COMPOSE[target].get("healthcheck", {}).get("test"), f"{name} waits for {target}'s health check"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_runs_as_root(rendered: dict[str, list[Document]], overlay: str) -> None:
    users: dict[str, int] = {}
    for workload in _workloads(rendered[overlay]):
        name = workload["metadata"]["name"]
        pod = _pod(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod.get("runAsGroup", 1) > 0, name
        for container in _containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            users[_image_name(container["image"])] = pod["runAsUser"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^USER (\S+)$", dockerfile, re.M)[-1] == "10001:10001"
    for name, image in _compose_images().items():
        if image in users:
            uid, _, gid = str(COMPOSE[name]["user"]).partition(":")
            assert int(uid) == users[image] and int(gid) > 0, f"{name}: compose user is Kubernetes' runAsUser"
            assert COMPOSE[name]["read_only"] is True, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_requests_resources(rendered: dict[str, list[Document]], overlay: str) -> None:
    for workload in _workloads(rendered[overlay]):
        for container in _containers(workload):
            resources = container["resources"]
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget(rendered: dict[str, list[Document]], overlay: str) -> None:
    budgets = list(_of(rendered[overlay], "PodDisruptionBudget").values())
    for name, deployment in _of(rendered[overlay], "Deployment").items():
        mine = [b for b in budgets if _selects(b["spec"]["selector"], _pod_labels(deployment))]
        assert len(mine) == 1, f"{name}: {len(mine)} PodDisruptionBudgets"
        # maxUnavailable, so that a one-replica Deployment (dev) never blocks a node drain.
        assert mine[0]["spec"].get("maxUnavailable") == 1, name


def test_prod_runs_every_deployment_replicated(rendered: dict[str, list[Document]]) -> None:
    docs = rendered["prod"]
    scalers = {h["spec"]["scaleTargetRef"]["name"]: h for h in _of(docs, "HorizontalPodAutoscaler").values()}
    for name, deployment in _of(docs, "Deployment").items():
        if name in scalers:
            assert scalers[name]["spec"]["minReplicas"] >= 2, name
            # A fixed spec.replicas would reset what the autoscaler chose at every apply.
            assert "replicas" not in deployment["spec"], name
        else:
            assert deployment["spec"].get("replicas", 1) >= 2, name
    # Gateway replicas split the client NIPs by ownership leases (ksef_gateway.ownership), so it scales too.
    assert {"ksef-gateway", "buffer-svc", "notify-svc"} <= set(scalers)
    assert not _of(rendered["dev"], "HorizontalPodAutoscaler")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_scraped_on_their_api_port(rendered: dict[str, list[Document]], overlay: str) -> None:
    deployments = _of(rendered[overlay], "Deployment")
    for service in SERVICES:
        template = deployments[service]["spec"]["template"]["metadata"]
        annotations = template.get("annotations", {})
        (port,) = [p["containerPort"] for p in _pod(deployments[service])["containers"][0]["ports"]]
        assert annotations.get("prometheus.io/scrape") == "true", service
        assert annotations.get("prometheus.io/port") == str(port) == "8000", service
        assert annotations.get("prometheus.io/path") == "/metrics", service
        rules = [
            r
            for p in _policies_for(rendered[overlay], template["labels"], "Ingress")
            for r in p["spec"].get("ingress", [])
        ]
        assert any(
            {"namespaceSelector": {"matchLabels": MONITORING_NAMESPACE}} in r.get("from", []) and 8000 in _ports(r)
            for r in rules
        ), f"{service}: Prometheus may not reach port 8000"


# ----------------------------------------------------------------------------------------------- network policies


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespace_denies_by_default_and_resolves_names(rendered: dict[str, list[Document]], overlay: str) -> None:
    policies = list(_of(rendered[overlay], "NetworkPolicy").values())
    deny = [p["spec"] for p in policies if p["spec"]["podSelector"] == {}]
    assert {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} in deny, "no default deny"
    dns = [r for spec in deny for r in spec.get("egress", [])]
    assert any(
        {(p["protocol"], p["port"]) for p in r["ports"]} == {("UDP", 53), ("TCP", 53)}
        and not any(_admits_public(peer) for peer in r["to"])
        for r in dns
    ), "pods cannot reach kube-dns"
    # Namespace-wide policies open nothing else, so every other allowance names its pods.
    assert not any(spec.get("ingress") for spec in deny)
    assert all(_ports(r) == {53} for r in dns)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_and_notify_reach_public_addresses(rendered: dict[str, list[Document]], overlay: str) -> None:
    """The precise form of "only the gateway reaches KSeF" (base/network/kustomization.yaml): the (Deployment, port)
    pairs any policy lets out to a public address are exactly PUBLIC_EGRESS; pods of no Deployment (the migrate
    Jobs) and every other Deployment get none, and no rule admitting public addresses leaves its ports open."""
    docs = rendered[overlay]
    deployments = _of(docs, "Deployment")
    workloads = {f"{d['kind']}/{d['metadata']['name']}": _pod_labels(d) for d in _workloads(docs)}
    found: set[tuple[str, int | str]] = set()
    for where, labels in workloads.items():
        for policy in _policies_for(docs, labels, "Egress"):
            for rule in policy["spec"].get("egress", []):
                if _rule_admits_public(rule):
                    name = where.removeprefix("Deployment/")
                    found.update((name, port) for port in _ports(rule))
    assert found == PUBLIC_EGRESS
    assert all(name in deployments for name, _ in found)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_calls_between_pods_are_exactly_those_the_settings_make(
    rendered: dict[str, list[Document]], overlay: str
) -> None:
    """Each Deployment may call the pods its settings' URLs name (through their Services, at the pods' ports) and
    nothing else of the namespace; each admits exactly those callers on its port, plus Prometheus for the services
    and the ingress controller for the web UI."""
    docs = rendered[overlay]
    deployments = _of(docs, "Deployment")
    calls = _calls(docs)
    assert ("ksef-gateway", 8000) in calls["buffer-svc"] and ("auth-svc", 8000) in calls["approval-svc"]
    assert {name for name, _ in calls[WEB_UI]} == set(SERVICES)
    for name, deployment in deployments.items():
        labels = _pod_labels(deployment)
        allowed_out = {
            (peer, port)
            for p in _policies_for(docs, labels, "Egress")
            for rule in p["spec"].get("egress", [])
            for peer in _same_namespace_pods(rule.get("to", []), deployments)
            for port in _ports(rule)
        }
        assert allowed_out == calls[name], name
        callers = {caller for caller, targets in calls.items() for target, _ in targets if target == name}
        ingress = [r for p in _policies_for(docs, labels, "Ingress") for r in p["spec"].get("ingress", [])]
        allowed_in = {peer for r in ingress for peer in _same_namespace_pods(r.get("from", []), deployments)}
        assert allowed_in == callers, name
        own_ports = {p["containerPort"] for p in _pod(deployment)["containers"][0]["ports"]}
        assert all(_ports(r) <= own_ports for r in ingress), f"{name}: ingress to a port it does not serve"
        outside = [peer for r in ingress for peer in r.get("from", []) if "namespaceSelector" in peer]
        if name in SERVICES:
            assert outside == [{"namespaceSelector": {"matchLabels": MONITORING_NAMESPACE}}], name
        elif name == WEB_UI:
            (controller,) = outside
            assert controller["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
        else:
            assert outside == [], name
        assert not any("ipBlock" in peer for r in ingress for peer in r.get("from", [])), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_infrastructure_is_reachable_and_only_on_its_ports(
    rendered: dict[str, list[Document]], overlay: str
) -> None:
    """PostgreSQL for every pod of the platform, Kafka and the collector for the services; never on public addresses
    (checked above) and not for the web UI, which has neither."""
    docs = rendered[overlay]
    infra = {"postgresql": 5432, "kafka": 9092, "otlp-grpc": 4317, "otlp-http": 4318}
    for workload in _workloads(docs):
        name = workload["metadata"]["name"]
        rules = [r for p in _policies_for(docs, _pod_labels(workload), "Egress") for r in p["spec"].get("egress", [])]
        reachable = {
            port
            for r in rules
            if any("namespaceSelector" in peer or "ipBlock" in peer for peer in r.get("to", []))
            for port in _ports(r)
        }
        if workload["kind"] == "Job":
            expected = {infra["postgresql"]}
        elif name in SERVICES:
            expected = set(infra.values())
        else:
            expected = set()
        assert expected <= reachable, f"{name} cannot reach {expected - reachable}"
        assert not (set(infra.values()) - expected) & reachable, f"{name} reaches infrastructure it does not use"
        assert "*" not in reachable, name


# ----------------------------------------------------------------------------------------------- Kafka topics


def _kafka_setting(config: dict[str, str], field: str, default: int) -> int:
    values = [int(v) for k, v in config.items() if k.endswith(f"_KAFKA__{field.upper()}")]
    return values[0] if values else default


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_has_a_kafka_topic_and_no_other(rendered: dict[str, list[Document]], overlay: str) -> None:
    docs = rendered[overlay]
    topics = {d["spec"]["topicName"]: d["spec"] for d in _of(docs, "KafkaTopic").values()}
    assert TOPICS
    assert set(topics) == set(TOPICS) | {t + DLT_SUFFIX for t in TOPICS}
    defaults = KafkaSettings()
    deployments = _of(docs, "Deployment")
    for service in SERVICES:
        config = _config(docs, deployments[service])
        # The services create a missing topic themselves; whichever comes first, the result must be the same.
        partitions = _kafka_setting(config, "topic_partitions", defaults.topic_partitions)
        replicas = _kafka_setting(config, "topic_replication_factor", defaults.topic_replication_factor)
        for name, spec in topics.items():
            assert (spec["partitions"], spec["replicas"]) == (partitions, replicas), f"{name} vs {service}"
    for name, spec in topics.items():
        config = spec["config"]
        assert config["cleanup.policy"] == "delete", name
        assert int(config["retention.ms"]) >= 7 * 24 * 3600 * 1000, name
        if name.endswith(DLT_SUFFIX):
            original = topics[name.removesuffix(DLT_SUFFIX)]["config"]
            assert int(config["retention.ms"]) >= int(original["retention.ms"]), f"{name}: kept for operators"
        expected = (3, 2) if overlay == "prod" else (1, 1)
        assert (spec["replicas"], config["min.insync.replicas"]) == expected, name
