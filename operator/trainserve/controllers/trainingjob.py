"""The TrainingJob controller: its cache (TrainingJobs and their RayJobs) and its reconcile.

Kopf's watches (:mod:`trainserve.handlers.trainingjob`) feed the cache; every change to a TrainingJob or to one
of its RayJobs, and the periodic resync, queues the TrainingJob's key. ``reconcile`` lets
:func:`trainserve.plans.trainingjob.plan` decide and writes only the difference; writes go through to the
cache, so the next reconcile sees them even before the watch does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from trainserve.builders.rayjob import build_rayjob
from trainserve.builders.rbac import build_status_access
from trainserve.controllers.base import Key, KubeRayProbe, Object, Reconciler, object_key, utcnow
from trainserve.kube import ApiError, KubeApi
from trainserve.metrics import OperatorMetrics
from trainserve.naming import TRAININGJOB_LABEL, job_account_name
from trainserve.plans.trainingjob import Observed, RayJobView, plan, status_patch
from trainserve.settings import OperatorSettings

log = logging.getLogger("trainserve.operator")


@dataclass
class Store:
    """The objects the watches delivered: TrainingJobs, and RayJobs by the TrainingJob they belong to."""

    trainingjobs: dict[Key, Object] = field(default_factory=dict)
    rayjobs: dict[Key, dict[str, Object]] = field(default_factory=dict)

    def owned_rayjobs(self, key: Key) -> list[Object]:
        """RayJobs labelled for this TrainingJob and owned by this very object (not a deleted namesake)."""
        parent = self.trainingjobs.get(key) or {}
        uid = (parent.get("metadata") or {}).get("uid")
        out = []
        for rayjob in self.rayjobs.get(key, {}).values():
            owners = (rayjob.get("metadata") or {}).get("ownerReferences") or []
            if uid is None or not owners or any(o.get("uid") == uid for o in owners):
                out.append(rayjob)
        return out


class TrainingJobController(Reconciler):
    KIND = "TrainingJob"

    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        kuberay: KubeRayProbe | None = None,
    ):
        super().__init__(api, settings, metrics)
        self.clock = clock
        self.store = Store()
        self.kuberay = kuberay or KubeRayProbe(api, settings.kuberay_probe_seconds)
        self.metrics.track_trainingjobs(lambda: list(self.store.trainingjobs.values()))
        #: Called with each TrainingJob key that changed (the ModelService controller follows its sources).
        self.listeners: list[Callable[[Key], None]] = []

    def keys(self) -> list[Key]:
        return list(self.store.trainingjobs)

    def on_resync(self) -> None:
        self.kuberay.invalidate()

    def trainingjobs_in(self, namespace: str) -> dict[str, Object]:
        """The cached TrainingJobs of one namespace, by name."""
        return {name: obj for (ns, name), obj in list(self.store.trainingjobs.items()) if ns == namespace}

    # --- fed by the watches -------------------------------------------------------------------------------

    def observe_trainingjob(self, event_type: str | None, obj: Object) -> None:
        key = object_key(obj)
        if event_type == "DELETED":
            self.store.trainingjobs.pop(key, None)
            self.store.rayjobs.pop(key, None)
            self.queue.drop(key)
        else:
            self.store.trainingjobs[key] = obj
            self.queue.add(key)
        for listener in self.listeners:
            listener(key)

    def observe_rayjob(self, event_type: str | None, obj: Object) -> None:
        metadata = obj.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(TRAININGJOB_LABEL)
        if not owner:
            return
        key = (str(metadata.get("namespace") or ""), owner)
        children = self.store.rayjobs.setdefault(key, {})
        if event_type == "DELETED":
            children.pop(str(metadata.get("name")), None)
        else:
            children[str(metadata.get("name"))] = obj
        if key in self.store.trainingjobs:
            self.queue.add(key)

    # --- running ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(ApiError):
            await self.kuberay.installed()  # logs one line when KubeRay is missing
        await super().start()

    # --- the reconcile --------------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """Observe, plan, write the difference; returns when to look again (deadline, TTL), if ever."""
        body = self.store.trainingjobs.get(key)
        if body is None:
            return None
        namespace, name = key
        now = self.clock()
        views = [RayJobView.from_object(o) for o in self.store.owned_rayjobs(key)]
        installed = await self.kuberay.installed()
        decision = plan(Observed(body=body, rayjobs=views, kuberay_installed=installed, now=now))
        job = decision.job

        if decision.create_attempt is not None and job is not None:
            job = job.model_copy(deep=True)
            job.metadata.namespace = job.metadata.namespace or namespace
            await self.api.ensure_status_access(*build_status_access(job))
            desired = build_rayjob(
                job,
                self.settings,
                attempt=decision.create_attempt,
                deadline_seconds=decision.deadline_remaining,
            )
            rayjob, created = await self.api.create_rayjob(desired)
            if created:
                self.metrics.attempts.inc()
                log.info("TrainingJob %s/%s: created RayJob %s", namespace, name, desired["metadata"]["name"])
            self.observe_rayjob("ADDED", rayjob)
        current = decision.status.ray_job_name
        if decision.set_suspend is not None and current:
            patched = await self.api.patch_rayjob(namespace, current, {"spec": {"suspend": decision.set_suspend}})
            self.observe_rayjob("MODIFIED", patched)
        if decision.delete_access:
            await self.api.delete_status_access(namespace, job_account_name(name))
        for rayjob_name in decision.delete_rayjobs:
            await self.api.delete_rayjob(namespace, rayjob_name)
            self.store.rayjobs.get(key, {}).pop(rayjob_name, None)

        patch = status_patch(body.get("status"), decision.status)
        if patch:
            updated = await self.api.patch_trainingjob_status(namespace, name, patch)
            self.write_through(self.store.trainingjobs, key, updated.get("status") or decision.status.to_wire())
            for listener in self.listeners:
                listener(key)
        if decision.finished_now:
            self.metrics.jobs_finished.labels(decision.status.phase or "Failed").inc()
            self._observe_duration(decision.status.start_time, decision.status.completion_time)
        await self.post_events(body, decision.events, now)
        return decision.requeue_after

    def _observe_duration(self, start: datetime | None, end: datetime | None) -> None:
        if start is not None and end is not None:
            self.metrics.job_duration.observe(max(0.0, (end - start).total_seconds()))
