"""Rendering the Helm chart for tests: Helm's own engine (``helm_python``), the same code `make manifests` uses."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trainserve"
RELEASE = "trainserve"
NAMESPACE = "trainserve-system"

Object = dict[str, Any]


@functools.cache
def deploy_render() -> ModuleType:
    """``deploy/render.py`` (a script, not a package), loaded once."""
    spec = importlib.util.spec_from_file_location("trainserve_deploy_render", REPO / "deploy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """``{template path: text}``, as `helm install` renders it (NOTES.txt included)."""
    rendered: dict[str, str] = deploy_render().render_templates(values, name=name, namespace=namespace)
    return rendered


@functools.cache
def _objects(values_json: str, name: str, namespace: str) -> tuple[str, ...]:
    out: list[str] = []
    for path, text in sorted(render(json.loads(values_json), name=name, namespace=namespace).items()):
        if path.endswith(".yaml"):
            out.extend(json.dumps(doc) for doc in yaml.safe_load_all(text) if doc)
    return tuple(out)


def objects(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> list[Object]:
    """The rendered Kubernetes objects (CRDs not included: Helm installs those from crds/ on its own)."""
    return [json.loads(doc) for doc in _objects(json.dumps(values or {}, sort_keys=True), name, namespace)]


def of_kind(objs: list[Object], kind: str) -> list[Object]:
    return [obj for obj in objs if obj.get("kind") == kind]


def one(objs: list[Object], kind: str) -> Object:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(values: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects(values), "Deployment")["spec"]["template"]["spec"]
    return spec


def container(values: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = pod_spec(values)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def env(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(values)["env"]}


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def prometheus_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The alerting rule groups of the rendered PrometheusRule (prometheusRule.enabled forced on)."""
    merged = {**(values or {}), "prometheusRule": {**(values or {}).get("prometheusRule", {}), "enabled": True}}
    groups: list[dict[str, Any]] = one(objects(merged), "PrometheusRule")["spec"]["groups"]
    return groups
