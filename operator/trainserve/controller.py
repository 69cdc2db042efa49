"""The TrainingJob controller: a cache of what the watches saw, a work queue, and one reconcile function.

Kopf's watches feed the cache (:mod:`trainserve.handlers.trainingjob`); every change to a TrainingJob or to
one of its RayJobs, and a periodic resync, queues the TrainingJob's key. ``reconcile`` reads the cache,
lets :func:`trainserve.status.plan` decide, and writes only the difference. Writes go through to the cache,
so the next reconcile sees them even before the watch does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trainserve.builders import build_rayjob, build_status_access
from trainserve.kube import ApiError, KubeApi
from trainserve.metrics import OperatorMetrics
from trainserve.naming import TRAININGJOB_LABEL, job_account_name
from trainserve.settings import OperatorSettings
from trainserve.status import KUBERAY_MISSING_MESSAGE, Observed, RayJobView, plan, status_patch

log = logging.getLogger("trainserve.operator")

Key = tuple[str, str]  # (namespace, name)
Object = dict[str, Any]
COMPONENT = "trainserve-operator"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _key(obj: Object) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


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


class KubeRayProbe:
    """Whether KubeRay's RayJob CRD is served; answers are cached, changes are logged once."""

    def __init__(self, api: KubeApi, ttl: float):
        self.api = api
        self.ttl = ttl
        self._answer: bool | None = None
        self._checked = -1e18
        self._lock = asyncio.Lock()

    async def installed(self) -> bool:
        async with self._lock:
            if self._answer is None or time.monotonic() - self._checked > self.ttl:
                answer = await self.api.kuberay_installed()
                if answer != self._answer:
                    if answer:
                        log.info("KubeRay found: the RayJob CRD (rayjobs.ray.io/v1) is served")
                    else:
                        log.warning("KubeRay is not installed: %s", KUBERAY_MISSING_MESSAGE)
                self._answer, self._checked = answer, time.monotonic()
            return self._answer

    def invalidate(self) -> None:
        self._checked = -1e18


class TrainingJobController:
    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        from trainserve.workqueue import WorkQueue

        self.api = api
        self.settings = settings
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self.store = Store()
        self.queue: WorkQueue[Key] = WorkQueue(settings.retry_base_seconds, settings.retry_max_seconds)
        self.kuberay = KubeRayProbe(api, settings.kuberay_probe_seconds)
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics.track_phases(self._phases)

    def _phases(self) -> list[str | None]:
        return [(tj.get("status") or {}).get("phase") for tj in list(self.store.trainingjobs.values())]

    # --- fed by the watches -------------------------------------------------------------------------------

    def observe_trainingjob(self, event_type: str | None, obj: Object) -> None:
        key = _key(obj)
        if event_type == "DELETED":
            self.store.trainingjobs.pop(key, None)
            self.store.rayjobs.pop(key, None)
            self.queue.drop(key)
            return
        self.store.trainingjobs[key] = obj
        self.queue.add(key)

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
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"trainserve-worker-{i}") for i in range(self.settings.workers)
        ]
        self._tasks.append(asyncio.create_task(self._resync(), name="trainserve-resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.queue.close()

    async def _resync(self) -> None:
        """Level-triggered safety net: every job is looked at again, even if a watch event was missed."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.kuberay.invalidate()
            for key in list(self.store.trainingjobs):
                self.queue.add(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            started = time.monotonic()
            try:
                requeue = await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                reason = str(err.status) if isinstance(err, ApiError) else type(err).__name__
                self.metrics.reconcile_errors.labels("TrainingJob", reason).inc()
                delay = self.queue.retry(key)
                log.warning(
                    "reconciling TrainingJob %s/%s failed (%s); retrying in %.1fs",
                    *key,
                    err,
                    delay,
                    exc_info=not isinstance(err, ApiError),  # a bug: show where
                )
            else:
                self.queue.forget(key)
                if requeue is not None:
                    self.queue.add_after(key, requeue + 0.5)
            finally:
                self.metrics.reconcile_duration.labels("TrainingJob").observe(time.monotonic() - started)
                self.queue.done(key)

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
            # Write our status through into the newest cached object, not into `body`: a spec change the
            # watch delivered while the patch was in flight must not be overwritten with the old spec.
            latest = self.store.trainingjobs.get(key)
            if latest is not None:
                merged = copy.deepcopy(latest)
                merged["status"] = updated.get("status") or decision.status.to_wire()
                self.store.trainingjobs[key] = merged
        if decision.finished_now:
            self._observe_duration(decision.status.start_time, decision.status.completion_time)
        for event in decision.events:
            try:
                await self.api.post_event(body, event.type, event.reason, event.message, now, COMPONENT)
            except ApiError as err:  # an Event is worth a log line, not a retry of the whole reconcile
                log.warning("TrainingJob %s/%s: could not post event %s: %s", namespace, name, event.reason, err)
        return decision.requeue_after

    def _observe_duration(self, start: datetime | None, end: datetime | None) -> None:
        if start is not None and end is not None:
            self.metrics.job_duration.observe(max(0.0, (end - start).total_seconds()))
