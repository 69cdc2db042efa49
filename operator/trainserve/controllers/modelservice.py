"""The ModelService controller: a cache of ModelServices, their RayServices and NetworkPolicies, a work queue,
and one reconcile built on :func:`trainserve.plans.modelservice.plan_service`.

TrainingJobs come from the TrainingJob controller's cache: a change to a job that a ModelService serves
from (``fromTrainingJob``) queues that ModelService. The RayService is written only when what we would
write differs from what we wrote last (kept in an annotation), so KubeRay's defaults and status never
look like drift, and a patch carries only the difference.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from trainserve.api.figures import Figures
from trainserve.builders.networkpolicy import build_network_policy, network_policy_name
from trainserve.builders.rayservice import build_rayservice
from trainserve.controllers.base import Key, KubeRayProbe, Object, Reconciler, object_key, older, stale, uid_of, utcnow
from trainserve.controllers.canary_windows import CanaryWindows
from trainserve.kube import MODELSERVICES, RAYSERVICES, ApiError, KubeApi, controller_uid
from trainserve.metrics import OperatorMetrics, ServiceSample
from trainserve.naming import KUEUE_QUEUE_LABEL, MODELSERVICE_LABEL, serve_service_name
from trainserve.plans.modelservice import (
    RayServiceView,
    ServiceObserved,
    observed_status,
    plan_service,
    service_status_patch,
)
from trainserve.registry import RegistryAnswers
from trainserve.servingstats import StatsUnavailable, fetch_snapshot
from trainserve.settings import OperatorSettings

log = logging.getLogger("trainserve.operator")

#: The spec we last applied to a RayService, so a reconcile can tell our change from KubeRay's defaults.
APPLIED_ANNOTATION = "trainserve.io/applied-spec"


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_diff(old[key], value)
    return patch


def applied_spec(rayservice: Object) -> Object | None:
    text = ((rayservice.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION)
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _queue_label_patch(existing: Object, desired: Object) -> Object:
    """The Kueue queue label when the ModelService's differs from the RayService's (``None`` removes it); it reaches
    the next RayCluster KubeRay creates."""
    have = ((existing.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    want = desired["metadata"]["labels"].get(KUEUE_QUEUE_LABEL)
    return {KUEUE_QUEUE_LABEL: want} if have != want else {}


def _canonical(spec: Object) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


@dataclass
class ServiceStore:
    services: dict[Key, Object] = field(default_factory=dict)
    rayservices: dict[Key, Object] = field(default_factory=dict)
    #: The NetworkPolicies' specs, by owner.
    policies: dict[Key, Object] = field(default_factory=dict)


class ModelServiceController(Reconciler):
    KIND = "ModelService"
    PLURAL = MODELSERVICES
    CHILD_PLURAL = RAYSERVICES
    OWNER_LABEL = MODELSERVICE_LABEL

    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        trainingjobs: Callable[[str], dict[str, Object]],
        metrics: OperatorMetrics | None = None,
        kuberay: KubeRayProbe | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        super().__init__(api, settings, metrics)
        self.trainingjobs = trainingjobs
        self.kuberay = kuberay or KubeRayProbe(api, settings.kuberay_probe_seconds)
        self.clock = clock
        self.store = ServiceStore()
        self.canary = CanaryWindows()
        self.registry = RegistryAnswers()
        self.metrics.track_services(self._samples)

    def keys(self) -> list[Key]:
        return list(self.store.services)

    def _samples(self) -> list[ServiceSample]:
        out = []
        for (namespace, name), body in list(self.store.services.items()):
            status = observed_status(body)
            ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions)
            share = status.canary.traffic_percent if status.canary is not None else None
            out.append(ServiceSample(namespace, name, ready, share))
        return out

    # --- fed by the watches -------------------------------------------------------------------------------

    def observe_modelservice(self, event_type: str | None, obj: Object) -> None:
        key = object_key(obj)
        if stale(event_type, obj, self.store.services.get(key)):
            return
        if event_type == "DELETED":
            self.store.services.pop(key, None)
            self.store.rayservices.pop(key, None)
            self.store.policies.pop(key, None)
            self.forget(key)
            return
        self.store.services[key] = obj
        self.queue.add(key)

    def forget(self, key: Key) -> None:
        super().forget(key)
        self.canary.forget(key)

    def parents(self) -> dict[Key, Object]:
        return self.store.services

    def observe_parent(self, event_type: str, obj: Object) -> None:
        self.observe_modelservice(event_type, obj)

    def _owner_key(self, obj: Object) -> Key | None:
        metadata = obj.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(MODELSERVICE_LABEL)
        return (str(metadata.get("namespace") or ""), owner) if owner else None

    def observe_child(self, event_type: str | None, obj: Object) -> None:
        self.observe_rayservice(event_type, obj)

    async def seed_children(self) -> None:
        """The RayServices and also the NetworkPolicies: a restarted operator must not create either again."""
        await super().seed_children()
        namespaces = () if self.settings.all_namespaces else self.settings.namespaces
        try:
            policies = await self.api.list_network_policies(namespaces, MODELSERVICE_LABEL)
        except ApiError as err:
            log.info("ModelService: NetworkPolicies not listed at start (%s); the watch brings them", err)
            return
        for policy in policies:
            self.observe_network_policy("ADDED", policy)

    def observe_rayservice(self, event_type: str | None, obj: Object) -> None:
        key = self._owner_key(obj)
        if key is None or str((obj.get("metadata") or {}).get("name")) != key[1]:
            return
        if stale(event_type, obj, self.store.rayservices.get(key)):
            return
        if event_type == "DELETED":
            self.store.rayservices.pop(key, None)
        else:
            self.store.rayservices[key] = obj
        if key in self.store.services:
            self.queue.add(key)

    def observe_network_policy(self, event_type: str | None, obj: Object) -> None:
        key = self._owner_key(obj)
        if key is None or str((obj.get("metadata") or {}).get("name")) != network_policy_name("ModelService", key[1]):
            return
        if event_type == "DELETED":
            self.store.policies.pop(key, None)
        else:
            self.store.policies[key] = obj.get("spec") or {}
        if key in self.store.services:
            self.queue.add(key)

    def trainingjob_changed(self, key: Key) -> None:
        """Queue the ModelServices that serve from (or canary) the TrainingJob ``key``."""
        namespace, name = key
        for service_key, body in list(self.store.services.items()):
            if service_key[0] == namespace and name in _sources(body):
                self.queue.add(service_key)

    # --- the reconcile --------------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        body = self.store.services.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None  # being deleted: the garbage collector removes the children by their owner reference
        namespace, name = key
        now = self.clock()
        window, wait = await self.canary.window(key, body, lambda uri: self._canary_figures(key, body, uri))
        rayservice = await self._current_rayservice(key, body)
        foreign = rayservice is not None and controller_uid(rayservice) not in (None, uid_of(body))
        model_name = ((body.get("spec") or {}).get("modelName")) or name
        observed = ServiceObserved(
            body=body,
            trainingjobs=self.trainingjobs(namespace),
            rayservice=RayServiceView.from_object(rayservice, model_name) if rayservice and not foreign else None,
            kuberay_installed=await self.kuberay.installed(RAYSERVICES),
            now=now,
            canary_window=window,
            foreign_rayservice=foreign,
            pod_health=self.workload.health(key, now),
            registry=await self.registry.for_spec(body.get("spec") or {}),
        )
        decision = plan_service(observed)
        if decision.args is not None and rayservice is None and not await self._auth_supported():
            decision = plan_service(replace(observed, ray_auth_unsupported=True))
        service = decision.service
        if decision.args is not None and service is not None:
            service = service.model_copy(deep=True)
            service.metadata.namespace = service.metadata.namespace or namespace
            desired = build_rayservice(service, decision.args, self.settings, decision.storage_secret)
            if not await self._apply_rayservice(key, body, desired, rayservice):
                return 0.0  # found a namesake's RayService: the next pass plans with it (nothing written)
            await self._apply_network_policy(key, build_network_policy(service, self.settings))

        patch = service_status_patch(body.get("status"), decision.status)
        if patch:
            updated = await self.patch_parent_status(key, patch)
            if updated is None:
                return None  # deleted meanwhile
            self.wrote(key, f"status ({', '.join(sorted(patch))})")
            self.write_through(self.store.services, key, updated.get("status") or decision.status.to_wire())
        for result in decision.canary_results:
            self.metrics.canary_promotions.labels(result).inc()
            log.info("ModelService %s/%s: canary %s", namespace, name, result.replace("_", " "))
        await self.post_events(body, decision.events, now)
        waits = [w for w in (decision.requeue_after, wait) if w is not None]
        return min(waits) if waits else None

    async def _auth_supported(self) -> bool:
        """Whether the RayService about to be created gets Ray token authentication as written (asked only then)."""
        return not self.settings.ray_auth or await self.kuberay.auth_supported(RAYSERVICES)

    async def _apply_network_policy(self, key: Key, desired: Object) -> None:
        """Creates the service's NetworkPolicy, or brings one written by an earlier version or
        other settings up to date (what it allows is ours alone: a change by hand is undone)."""
        current = self.store.policies.get(key)
        if current == desired["spec"]:
            return
        if current is None:
            await self.api.create_network_policy(desired)
            self.wrote(key, "created NetworkPolicy")
        else:
            await self.api.patch_network_policy(key[0], desired["metadata"]["name"], {"spec": desired["spec"]})
            self.wrote(key, "patched NetworkPolicy")
        self.store.policies[key] = desired["spec"]

    async def _current_rayservice(self, key: Key, body: Object) -> Object | None:
        """The cached RayService; one that belongs to a namesake is read again (it may be gone by now)."""
        rayservice = self.store.rayservices.get(key)
        if rayservice is not None and controller_uid(rayservice) not in (None, uid_of(body)):
            rayservice = await self.api.get_ray_object(RAYSERVICES, *key)
            if rayservice is None:
                self.store.rayservices.pop(key, None)
            else:
                self._remember_rayservice(key, rayservice)
        return rayservice

    async def _apply_rayservice(self, key: Key, body: Object, desired: Object, existing: Object | None) -> bool:
        """Create the RayService, or patch what changed since we last applied; nothing when nothing changed.
        False when a RayService of this name turns out to belong to someone else (it is never taken over)."""
        namespace, name = key
        spec_text = _canonical(desired["spec"])
        if existing is None:
            if not await self.owner_alive(key, body):
                return False
            desired["metadata"].setdefault("annotations", {})[APPLIED_ANNOTATION] = spec_text
            created, new = await self.api.create_rayservice(desired)
            self._remember_rayservice(key, created)
            if not new and controller_uid(created) != uid_of(body):
                log.info("ModelService %s/%s: RayService %s belongs to another owner; waiting", namespace, name, name)
                return False
            self.wrote(key, "created RayService")
            log.info("ModelService %s/%s: created RayService %s", namespace, name, name)
            return True
        before = applied_spec(existing)
        queue = _queue_label_patch(existing, desired)
        if before is not None and _canonical(before) == spec_text and not queue:
            return True
        spec_patch = merge_diff(before, desired["spec"]) if before is not None else desired["spec"]
        patch: Object = {"metadata": {"annotations": {APPLIED_ANNOTATION: spec_text}}, "spec": spec_patch}
        if queue:
            patch["metadata"]["labels"] = queue
        patched = await self.api.patch_rayservice(namespace, name, patch)
        self.wrote(key, "patched RayService")
        changed = sorted(spec_patch) + (["queue label"] if queue else [])
        log.info("ModelService %s/%s: updated RayService %s (%s)", namespace, name, name, ", ".join(changed))
        self._remember_rayservice(key, patched)
        return True

    def _remember_rayservice(self, key: Key, obj: Object) -> None:
        """Caches ``obj`` unless the watch already delivered a newer version (a late answer to our own call)."""
        if not older(obj, self.store.rayservices.get(key)):
            self.store.rayservices[key] = obj

    async def _canary_figures(self, key: Key, body: Object, uri: str) -> Figures | None:
        namespace, name = key
        model_name = ((body.get("spec") or {}).get("modelName")) or name
        base = self.settings.serve_stats_url.format(service=serve_service_name(name), namespace=namespace)
        url = f"{base.rstrip('/')}/v2/models/{model_name}/stats"
        try:
            snapshot = await fetch_snapshot(url)
        except StatsUnavailable as err:
            log.warning("ModelService %s/%s: no canary figures: %s", namespace, name, err)
            return None
        return snapshot.for_uri(uri) or Figures()


def _sources(body: Object) -> set[str]:
    """Names of the TrainingJobs a ModelService's models come from."""
    spec = body.get("spec") or {}
    out = set()
    for ref in ((spec.get("model") or {}), (((spec.get("canary") or {}).get("model")) or {})):
        source = (ref.get("fromTrainingJob") or {}).get("name")
        if source:
            out.add(str(source))
    return out
