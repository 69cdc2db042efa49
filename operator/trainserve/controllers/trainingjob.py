"""The TrainingJob controller: its cache (TrainingJobs and their RayJobs) and its reconcile.

Kopf's watches (:mod:`trainserve.handlers.trainingjob`) feed the cache; every change to a TrainingJob or to one
of its RayJobs, and the periodic resync, queues the TrainingJob's key. ``reconcile`` lets
:func:`trainserve.plans.trainingjob.plan` decide and writes only the difference; writes go through to the
cache, so the next reconcile sees them even before the watch does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.networkpolicy import build_network_policy, network_policy_name
from trainserve.builders.rayjob import build_rayjob
from trainserve.builders.rbac import build_status_access, user_account
from trainserve.controllers.base import Key, KubeRayProbe, Object, Reconciler, object_key, stale, uid_of, utcnow
from trainserve.kube import RAYJOBS, TRAININGJOBS, ApiError, KubeApi, controller_uid
from trainserve.metrics import OperatorMetrics
from trainserve.naming import TRAININGJOB_LABEL, job_account_name
from trainserve.plans.trainingjob import FINISHED, Observed, Plan, RayJobView, plan, status_patch
from trainserve.settings import OperatorSettings

log = logging.getLogger("trainserve.operator")


@dataclass
class Store:
    """The objects the watches delivered: TrainingJobs, and RayJobs by the TrainingJob they belong to."""

    trainingjobs: dict[Key, Object] = field(default_factory=dict)
    rayjobs: dict[Key, dict[str, Object]] = field(default_factory=dict)

    def foreign_rayjobs(self, key: Key) -> set[str]:
        """RayJobs labelled for this TrainingJob but controlled by another object (a deleted namesake's)."""
        uid = ((self.trainingjobs.get(key) or {}).get("metadata") or {}).get("uid")
        names = self.rayjobs.get(key, {})
        return {name for name, obj in names.items() if uid and controller_uid(obj) not in (None, uid)}

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
    PLURAL = TRAININGJOBS
    CHILD_PLURAL = RAYJOBS
    OWNER_LABEL = TRAININGJOB_LABEL

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
        #: RayJob names a create found under another owner, per job; looked at again (reads) until gone.
        self.conflicts: dict[Key, set[str]] = {}
        #: Access objects found under another owner, per job; and the uid whose access was last confirmed.
        self.access_conflicts: dict[Key, list[str]] = {}
        self.access_checked: dict[Key, str] = {}

    def keys(self) -> list[Key]:
        return list(self.store.trainingjobs)

    def on_resync(self) -> None:
        self.kuberay.invalidate()
        self.access_checked.clear()  # confirmed again (reads only), in case someone deleted them

    def forget(self, key: Key) -> None:
        super().forget(key)
        for memo in (self.conflicts, self.access_conflicts, self.access_checked):
            memo.pop(key, None)

    def parents(self) -> dict[Key, Object]:
        return self.store.trainingjobs

    def observe_parent(self, event_type: str, obj: Object) -> None:
        self.observe_trainingjob(event_type, obj)

    def trainingjobs_in(self, namespace: str) -> dict[str, Object]:
        """The cached TrainingJobs of one namespace, by name."""
        return {name: obj for (ns, name), obj in list(self.store.trainingjobs.items()) if ns == namespace}

    # --- fed by the watches -------------------------------------------------------------------------------

    def observe_trainingjob(self, event_type: str | None, obj: Object) -> None:
        key = object_key(obj)
        if stale(event_type, obj, self.store.trainingjobs.get(key)):
            return
        if event_type == "DELETED":
            self.store.trainingjobs.pop(key, None)
            self.store.rayjobs.pop(key, None)
            self.forget(key)
        else:
            self.store.trainingjobs[key] = obj
            self.queue.add(key)
        for listener in self.listeners:
            listener(key)

    def observe_child(self, event_type: str | None, obj: Object) -> None:
        self.observe_rayjob(event_type, obj)

    def observe_rayjob(self, event_type: str | None, obj: Object) -> None:
        metadata = obj.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(TRAININGJOB_LABEL)
        if not owner:
            return
        key = (str(metadata.get("namespace") or ""), owner)
        children, name = self.store.rayjobs.setdefault(key, {}), str(metadata.get("name"))
        if stale(event_type, obj, children.get(name)):  # e.g. a late answer to our own call: keep the newer
            return
        if event_type == "DELETED":
            children.pop(name, None)
        else:
            children[name] = obj
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
        namespace = key[0]
        now = self.clock()
        await self._recheck_conflicts(key, body)
        views = [RayJobView.from_object(o) for o in self.store.owned_rayjobs(key)]
        observed = Observed(
            body=body,
            rayjobs=views,
            kuberay_installed=await self.kuberay.installed(),
            now=now,
            foreign_rayjobs=frozenset(self.store.foreign_rayjobs(key) | self.conflicts.get(key, set())),
            foreign_access=tuple(self.access_conflicts.get(key, ())),
            pod_health=self.workload.health(key, now),
        )
        decision = plan(observed)
        if decision.create_attempt is not None and not await self._auth_supported():
            decision = plan(replace(observed, ray_auth_unsupported=True))
        if decision.job is not None and decision.status.phase not in FINISHED and not decision.delete_access:
            job = decision.job.model_copy(deep=True)
            job.metadata.namespace = job.metadata.namespace or namespace
            if not await self._ensure_access(key, body, job):
                return 0.0  # the next pass plans with what was found (nothing was written)
            attempt = decision.create_attempt
            if attempt is not None and not await self._create_attempt(
                key, body, job, attempt, decision.deadline_remaining
            ):
                return 0.0
        await self._apply_children(key, decision.status.ray_job_name, decision.set_suspend, decision)

        patch = status_patch(body.get("status"), decision.status)
        if patch:
            updated = await self.patch_parent_status(key, patch)
            if updated is None:
                return None  # deleted meanwhile
            self.wrote(key, f"status ({', '.join(sorted(patch))})")
            self.write_through(self.store.trainingjobs, key, updated.get("status") or decision.status.to_wire())
            for listener in self.listeners:
                listener(key)
        if decision.finished_now:
            self.metrics.jobs_finished.labels(decision.status.phase or "Failed").inc()
            self._observe_duration(decision.status.start_time, decision.status.completion_time)
        await self.post_events(body, decision.events, now)
        return decision.requeue_after

    async def _auth_supported(self) -> bool:
        """Whether the RayJob about to be created gets Ray token authentication as written (asked only then)."""
        return not self.settings.ray_auth or await self.kuberay.auth_supported(RAYJOBS)

    async def _ensure_access(self, key: Key, body: Object, job: TrainingJob) -> bool:
        """The job's status access (ServiceAccount unless it names its own, Role, RoleBinding) exists and is its
        own (checked once per resync)."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if self.access_checked.get(key) == uid:
            return True
        if not await self.owner_alive(key, body):
            return False
        # The NetworkPolicy comes with the access objects, before the first Ray pod (read, created when missing),
        # side by side with them: it adds no latency to a job's start.
        found = await asyncio.gather(
            self.api.ensure_status_access(build_status_access(job)),
            self.api.ensure_status_access([build_network_policy(job, self.settings)]),
        )
        foreign = [name for names in found for name in names]
        if foreign != self.access_conflicts.get(key, []):
            self.access_conflicts[key] = foreign
            return False
        if not foreign:
            self.access_checked[key] = uid
        return True

    async def _create_attempt(
        self, key: Key, body: Object, job: TrainingJob, attempt: int, deadline: int | None
    ) -> bool:
        """Creates the attempt's RayJob; False when one of that name belongs to someone else (never adopted)."""
        if not await self.owner_alive(key, body):
            return False
        desired = build_rayjob(job, self.settings, attempt=attempt, deadline_seconds=deadline)
        rayjob, created = await self.api.create_rayjob(desired)
        if created:
            self.metrics.attempts.inc()
            self.wrote(key, f"created RayJob {desired['metadata']['name']}")
            log.info("TrainingJob %s/%s: created RayJob %s", *key, desired["metadata"]["name"])
        elif controller_uid(rayjob) != controller_uid(desired):
            log.info(
                "TrainingJob %s/%s: RayJob %s belongs to another owner; waiting", *key, desired["metadata"]["name"]
            )
            self.conflicts.setdefault(key, set()).add(desired["metadata"]["name"])
            return False
        self.observe_rayjob("ADDED", rayjob)
        return True

    async def _recheck_conflicts(self, key: Key, body: Object) -> None:
        """Looks again (reads only) at RayJobs found to belong to another owner, from a 409 or the cache (whose
        DELETED event a watch outage may have lost); forgets those gone."""
        children = self.store.rayjobs.get(key, {})
        for rayjob_name in sorted(self.conflicts.get(key, set()) | self.store.foreign_rayjobs(key)):
            found = await self.api.get_rayjob(key[0], rayjob_name)
            if found is None:
                children.pop(rayjob_name, None)
            elif controller_uid(found) != uid_of(body):
                continue
            self.conflicts.get(key, set()).discard(rayjob_name)
        if self.access_conflicts.get(key):
            self.access_checked.pop(key, None)  # looked at again by _ensure_access

    async def _apply_children(self, key: Key, current: str | None, suspend: bool | None, decision: Plan) -> None:
        namespace, name = key
        if suspend is not None and current:
            patched = await self.api.patch_rayjob(namespace, current, {"spec": {"suspend": suspend}})
            self.wrote(key, f"suspend={suspend} on RayJob {current}")
            self.observe_rayjob("MODIFIED", patched)
        if decision.delete_access:
            own_account = decision.job is None or user_account(decision.job) is None
            await self.api.delete_status_access(namespace, job_account_name(name), account=own_account)
            await self.api.delete_network_policy(namespace, network_policy_name("TrainingJob", name))
            self.access_checked.pop(key, None)
        for rayjob_name in decision.delete_rayjobs:
            await self.api.delete_rayjob(namespace, rayjob_name)
            self.wrote(key, f"deleted RayJob {rayjob_name}")
            self.store.rayjobs.get(key, {}).pop(rayjob_name, None)

    def _observe_duration(self, start: datetime | None, end: datetime | None) -> None:
        if start is not None and end is not None:
            self.metrics.job_duration.observe(max(0.0, (end - start).total_seconds()))
