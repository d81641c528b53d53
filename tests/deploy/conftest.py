"""Renders the Kustomize overlays without a kustomize binary (none is installed here, and PyPI has no maintained
pure-Python Kustomize), for the tests of this folder: fixture ``rendered`` gives each overlay's documents.

It implements only the subset of Kustomize that deploy/k8s uses, and refuses any other field, so a kustomization
that starts using more fails here instead of being rendered wrongly:

- ``resources``: files (several documents each) and folders with their own kustomization, rendered first;
- ``configMapGenerator``: ``envs`` / ``literals``, ``behavior: create`` or ``merge`` (an overlay adding to a base's
  map), the content hash suffix and the references to the map in pod templates. The suffix is a SHA-256 of the
  data, not kustomize's exact hash: the tests care that a change renames the map and its references follow;
- ``namespace`` (every document here is namespaced); ``labels`` with ``includeSelectors`` false and
  ``includeTemplates`` (pod templates too); ``replicas``; ``images`` (``newTag`` / ``newName``); ``patches``
  with an inline JSON 6902 patch and a ``target`` of group, kind and name (a regular expression, as in Kustomize).

The order is Kustomize's: a folder's resources and generators first, then its patches, namespace, labels, images
and replicas; hash suffixes and the references to them last, once the overlays have merged into the maps.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")

Document = dict[str, Any]

_SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "namespace",
    "labels",
    "replicas",
    "images",
    "patches",
}
# Marks a generated ConfigMap until the end of the render, when it gets its hash suffix.
_GENERATED = "kustomize-lite/generated"
_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class KustomizeError(Exception):
    pass


def _load(path: Path) -> list[Document]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _env_file(path: Path) -> dict[str, str]:
    data: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise KustomizeError(f"{path}: not KEY=VALUE: {line!r}")
            data[key.strip()] = value
    return data


def _generate(folder: Path, spec: dict[str, Any], docs: list[Document]) -> None:
    unknown = set(spec) - {"name", "envs", "literals", "behavior"}
    if unknown:
        raise KustomizeError(f"{folder}: configMapGenerator fields not supported: {sorted(unknown)}")
    data: dict[str, str] = {}
    for env in spec.get("envs", []):
        data.update(_env_file(folder / env))
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    behavior = spec.get("behavior", "create")
    existing = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == spec["name"]]
    if behavior == "merge":
        if len(existing) != 1 or _GENERATED not in existing[0]["metadata"].get("annotations", {}):
            raise KustomizeError(f"{folder}: merge into {spec['name']}, which no base generates")
        existing[0]["data"].update(data)
    elif behavior == "create":
        if existing:
            raise KustomizeError(f"{folder}: {spec['name']} generated twice")
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": spec["name"], "annotations": {_GENERATED: "true"}},
                "data": data,
            }
        )
    else:
        raise KustomizeError(f"{folder}: configMapGenerator behavior {behavior!r} not supported")


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"not a JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json6902(doc: Document, operations: list[dict[str, Any]]) -> None:
    for op in operations:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if kind == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif kind in ("add", "replace"):
            if kind == "replace" and (last not in node if isinstance(node, dict) else int(last) >= len(node)):
                raise KustomizeError(f"replace of a missing {op['path']} in {doc['kind']}/{doc['metadata']['name']}")
            if isinstance(node, list):
                if last == "-":
                    node.append(op["value"])
                elif kind == "add":
                    node.insert(int(last), op["value"])
                else:
                    node[int(last)] = op["value"]
            else:
                node[last] = op["value"]
        else:
            raise KustomizeError(f"JSON patch op {kind!r} not supported")


def _targets(doc: Document, target: dict[str, Any]) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name"}
    if unknown:
        raise KustomizeError(f"patch target fields not supported: {sorted(unknown)}")
    group, _, version = doc["apiVersion"].rpartition("/")
    checks = {"group": group, "version": version, "kind": doc["kind"], "name": doc["metadata"]["name"]}
    return all(re.fullmatch(str(target[k]), checks[k]) for k in target)


def _pod_specs(doc: Document) -> list[dict[str, Any]]:
    if doc["kind"] in _WORKLOADS:
        return [doc["spec"]["template"]["spec"]]
    return []


def _containers(doc: Document) -> list[dict[str, Any]]:
    return [c for pod in _pod_specs(doc) for c in pod.get("initContainers", []) + pod.get("containers", [])]


def _set_image(image: str, rules: list[dict[str, Any]]) -> str:
    name, tag = image, None
    if ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    for rule in rules:
        unknown = set(rule) - {"name", "newName", "newTag"}
        if unknown:
            raise KustomizeError(f"images fields not supported: {sorted(unknown)}")
        if rule["name"] == name:
            name = rule.get("newName", name)
            tag = str(rule["newTag"]) if "newTag" in rule else tag
    return f"{name}:{tag}" if tag else name


def _transform(folder: Path, kustomization: dict[str, Any], docs: list[Document]) -> None:
    for patch in kustomization.get("patches", []):
        if set(patch) != {"target", "patch"}:
            raise KustomizeError(f"{folder}: only inline JSON 6902 patches with a target are supported")
        operations = yaml.safe_load(patch["patch"])
        if not isinstance(operations, list):
            raise KustomizeError(f"{folder}: strategic merge patches are not supported")
        matched = [d for d in docs if _targets(d, patch["target"])]
        if not matched:
            raise KustomizeError(f"{folder}: patch target {patch['target']} matches nothing")
        for doc in matched:
            _json6902(doc, operations)
    if "namespace" in kustomization:
        for doc in docs:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    for label in kustomization.get("labels", []):
        if set(label) - {"pairs", "includeSelectors", "includeTemplates"} or label.get("includeSelectors"):
            raise KustomizeError(f"{folder}: labels supported only with includeSelectors false")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and doc["kind"] in _WORKLOADS:
                doc["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for doc in docs:
        for container in _containers(doc):
            container["image"] = _set_image(container["image"], kustomization.get("images", []))
    for replica in kustomization.get("replicas", []):
        matched = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == replica["name"]]
        if not matched:
            raise KustomizeError(f"{folder}: replicas for {replica['name']}, which is not a Deployment here")
        for doc in matched:
            doc["spec"]["replicas"] = replica["count"]


def _build(folder: Path) -> list[Document]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _SUPPORTED
    if unknown:
        raise KustomizeError(f"{folder}: kustomization fields not supported by this renderer: {sorted(unknown)}")
    docs: list[Document] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        docs.extend(_build(path) if path.is_dir() else _load(path))
    for spec in kustomization.get("configMapGenerator", []):
        _generate(folder, spec, docs)
    _transform(folder, kustomization, docs)
    seen: set[tuple[str, str]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{folder}: {key} defined twice")
        seen.add(key)
    return docs


def _finish(docs: list[Document]) -> list[Document]:
    """Hash suffixes for the generated maps, and every reference to them in pod templates renamed to match."""
    renamed: dict[str, str] = {}
    for doc in docs:
        annotations = doc["metadata"].get("annotations", {})
        if annotations.pop(_GENERATED, None):
            if not annotations:
                del doc["metadata"]["annotations"]
            digest = hashlib.sha256(json.dumps(doc["data"], sort_keys=True).encode()).hexdigest()[:10]
            renamed[doc["metadata"]["name"]] = f"{doc['metadata']['name']}-{digest}"
            doc["metadata"]["name"] = renamed[doc["metadata"]["name"]]
    for doc in docs:
        for pod in _pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    volume["configMap"]["name"] = renamed.get(volume["configMap"]["name"], volume["configMap"]["name"])
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    ref["name"] = renamed.get(ref["name"], ref["name"])
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("configMapKeyRef")
                if ref is not None:
                    ref["name"] = renamed.get(ref["name"], ref["name"])
    return docs


def render(folder: Path) -> list[Document]:
    """What ``kustomize build folder`` gives, for the subset of Kustomize described above."""
    return _finish(copy.deepcopy(_build(folder)))


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Document]]:
    """Each overlay's rendered documents (fresh copies are not needed: the tests only read them)."""
    return {overlay: render(K8S / "overlays" / overlay) for overlay in OVERLAYS}
