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
from trainserve.kube import RAYJOBS, ApiError, KubeApi
from trainserve.metrics import OperatorMetrics
from trainserve.naming import TRAININGJOB_LABEL, job_account_name
from trainserve.settings import OperatorSettings
from trainserve.status import KUBERAY_MISSING_MESSAGE, Observed, RayJobView, plan, status_patch
from trainserve.transitions import Transition

log = logging.getLogger("trainserve.operator")

Key = tuple[str, str]  # (namespace, name)
Object = dict[str, Any]
COMPONENT = "trainserve-operator"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _key(obj: Object) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _older(obj: Object, than: Object | None) -> bool:
    """Whether ``obj`` is an older version of ``than``, by resourceVersion: an integer that grows with every
    write, as client-go's integer MutationCache compares them (a version that is not an integer is not older)."""
    versions = [str(((o or {}).get("metadata") or {}).get("resourceVersion") or "") for o in (obj, than)]
    return all(v.isdigit() for v in versions) and int(versions[0]) < int(versions[1])


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
    """Which KubeRay resources the API server serves; answers are cached, changes are logged once."""

    def __init__(self, api: KubeApi, ttl: float):
        self.api = api
        self.ttl = ttl
        self._answer: set[str] | None = None
        self._checked = -1e18
        self._lock = asyncio.Lock()

    async def installed(self, plural: str = RAYJOBS) -> bool:
        """Whether ``ray.io/v1`` ``plural`` (``rayjobs``, ``rayservices``) is served."""
        async with self._lock:
            if self._answer is None or time.monotonic() - self._checked > self.ttl:
                answer = await self.api.kuberay_resources()
                if answer != self._answer:
                    if answer:
                        log.info("KubeRay found: ray.io/v1 serves %s", ", ".join(sorted(answer)))
                    else:
                        log.warning("KubeRay is not installed: %s", KUBERAY_MISSING_MESSAGE)
                self._answer, self._checked = answer, time.monotonic()
            return plural in self._answer

    def invalidate(self) -> None:
        self._checked = -1e18


class Reconciler:
    """A work queue of keys, ``settings.workers`` workers calling :meth:`reconcile`, and a periodic resync.

    Failed reconciles are retried with exponential backoff per key; one key is never reconciled twice
    at once. Subclasses feed the queue from their watches and implement :meth:`reconcile` and :meth:`keys`.
    """

    KIND = ""

    def __init__(self, api: KubeApi, settings: OperatorSettings, metrics: OperatorMetrics | None):
        from trainserve.workqueue import WorkQueue

        self.api = api
        self.settings = settings
        self.metrics = metrics or OperatorMetrics()
        self.queue: WorkQueue[Key] = WorkQueue(settings.retry_base_seconds, settings.retry_max_seconds)
        self._tasks: list[asyncio.Task[None]] = []

    def keys(self) -> list[Key]:
        raise NotImplementedError

    async def reconcile(self, key: Key) -> float | None:
        """Make ``key`` right; returns when to look again, if ever."""
        raise NotImplementedError

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"trainserve-{self.KIND}-worker-{i}")
            for i in range(self.settings.workers)
        ]
        self._tasks.append(asyncio.create_task(self._resync(), name=f"trainserve-{self.KIND}-resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.queue.close()

    async def _resync(self) -> None:
        """Level-triggered safety net: every object is looked at again, even if a watch event was missed."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.on_resync()
            for key in self.keys():
                self.queue.add(key)

    def on_resync(self) -> None:
        """Called before each resync round."""

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
                self.metrics.reconcile_errors.labels(self.KIND, reason).inc()
                delay = self.queue.retry(key)
                log.warning(
                    "reconciling %s %s/%s failed (%s); retrying in %.1fs",
                    self.KIND,
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
                self.metrics.reconcile_duration.labels(self.KIND).observe(time.monotonic() - started)
                self.queue.done(key)

    async def post_events(self, body: Object, events: list[Transition], now: datetime) -> None:
        namespace, name = _key(body)
        for event in events:
            try:
                await self.api.post_event(body, event.type, event.reason, event.message, now, COMPONENT)
            except ApiError as err:  # an Event is worth a log line, not a retry of the whole reconcile
                log.warning("%s %s/%s: could not post event %s: %s", self.KIND, namespace, name, event.reason, err)

    @staticmethod
    def write_through(cache: dict[Key, Object], key: Key, status: Object) -> None:
        """Put a status just written into the newest cached object (not the one the reconcile started from):
        a spec change the watch delivered while the patch was in flight must not be overwritten."""
        latest = cache.get(key)
        if latest is not None:
            merged = copy.deepcopy(latest)
            merged["status"] = status
            cache[key] = merged


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
        key = _key(obj)
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
        children, name = self.store.rayjobs.setdefault(key, {}), str(metadata.get("name"))
        if event_type == "DELETED":
            children.pop(name, None)
        elif not _older(obj, children.get(name)):  # an answer to our own call the watch has overtaken: keep
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
