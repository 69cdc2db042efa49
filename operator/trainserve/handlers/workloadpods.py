"""Kopf handlers for the Ray pods, RayClusters and KubeRay's Warning Events of our objects: feed the controllers.

The watches are filtered by the API server, so a cluster with thousands of other pods sends us none of them:
pods and RayClusters by our ``app.kubernetes.io/managed-by=trainserve`` label (the Ray pod templates carry it,
``builders.raypod``; KubeRay keeps template labels on its pods and copies a RayJob's or RayService's labels to
the RayCluster it makes, ray-operator/controllers/ray/rayjob_controller.go ``constructRayClusterForRayJob`` and
rayservice_controller.go ``constructRayClusterForRayService``), Events by ``involvedObject.apiVersion=ray.io/v1``
and ``type=Warning`` (fields the API server selects Events by: kubernetes pkg/registry/core/event/strategy.go). Namespaces are the operator's own (Kopf's ``clusterwide`` or ``namespaces``).
"""

from __future__ import annotations

from typing import Any

import kopf

from trainserve.controllers.base import Reconciler
from trainserve.kube import RAY_GROUP, RAY_VERSION
from trainserve.naming import MANAGED_BY, MANAGED_BY_LABEL

RAYCLUSTERS = "rayclusters"
OURS = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
KUBERAY_WARNINGS = f"involvedObject.apiVersion={RAY_GROUP}/{RAY_VERSION},type=Warning"


def register(registry: kopf.OperatorRegistry, controllers: list[Reconciler]) -> None:
    """Adds the pod, RayCluster and Event handlers to ``registry``; each object goes to every controller, which
    files it under its owner when it carries that controller's owner label (or names one of its RayClusters)."""

    @kopf.on.startup(registry=registry)
    async def select_on_the_server(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.label_selectors["v1", "pods"] = OURS
        settings.watching.label_selectors[RAY_GROUP, RAYCLUSTERS] = OURS
        settings.watching.field_selectors["v1", "events"] = KUBERAY_WARNINGS

    @kopf.on.event("v1", "pods", labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=registry)
    async def pod_changed(event: kopf.RawEvent, **_: Any) -> None:
        for controller in controllers:
            controller.observe_pod(event.get("type"), dict(event["object"]))

    @kopf.on.event(RAY_GROUP, RAY_VERSION, RAYCLUSTERS, labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=registry)
    async def raycluster_changed(event: kopf.RawEvent, **_: Any) -> None:
        for controller in controllers:
            controller.observe_raycluster(event.get("type"), dict(event["object"]))

    @kopf.on.event("v1", "events", registry=registry)
    async def kuberay_warning(event: kopf.RawEvent, **_: Any) -> None:
        for controller in controllers:
            controller.observe_warning_event(event.get("type"), dict(event["object"]))
