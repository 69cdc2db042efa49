"""What both controllers share: the work-queue ``Reconciler``, the ``KubeRayProbe``, keys and object helpers.

A controller keeps a cache of what Kopf's watches delivered, queues an object's key on every change to it or
to one of its children and on a periodic resync, and reconciles one key at a time: observe the cache, let
the kind's plan (:mod:`trainserve.plans`) decide, write only the difference.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
import time
from datetime import UTC, datetime
from typing import Any

from trainserve.api.base import GROUP, VERSION
from trainserve.controllers.workloadpods import WorkloadObjects
from trainserve.kube import RAY_GROUP, RAY_VERSION, RAYJOBS, RAYSERVICES, ApiError, KubeApi
from trainserve.metrics import OperatorMetrics
from trainserve.plans.common import KUBERAY_MISSING_MESSAGE, Transition
from trainserve.settings import OperatorSettings
from trainserve.workqueue import WorkQueue

log = logging.getLogger("trainserve.operator")

Key = tuple[str, str]  # (namespace, name)
Object = dict[str, Any]
COMPONENT = "trainserve-operator"
#: Writes for one object in a minute above which the operator warns of a write loop (a healthy object needs a
#: few: a child, status changes as the job moves, progress).
WRITES_PER_MINUTE = 12


def utcnow() -> datetime:
    return datetime.now(UTC)


def object_key(obj: Object) -> Key:
    """``(namespace, name)`` of an object."""
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def uid_of(obj: Object) -> str | None:
    uid = (obj.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def stale(event_type: str | None, obj: Object, cached: Object | None) -> bool:
    """Whether a watch event says nothing about the cached object: an older version of it (a late answer), or the
    deletion of a namesake that a newer object of the same name already replaced (watch streams are per object,
    so their events can arrive out of order)."""
    if cached is None:
        return False
    if event_type == "DELETED":
        return uid_of(obj) is not None and uid_of(obj) != uid_of(cached)
    return older(obj, cached)


def older(obj: Object, than: Object | None) -> bool:
    """Whether ``obj`` is an older version of ``than``, by resourceVersion: an integer that grows with every
    write, as client-go's integer MutationCache compares them (a version that is not an integer is not older)."""
    versions = [str(((o or {}).get("metadata") or {}).get("resourceVersion") or "") for o in (obj, than)]
    return all(v.isdigit() for v in versions) and int(versions[0]) < int(versions[1])


#: How long a CRD's answer to "has authOptions" holds: it changes only when KubeRay is upgraded (and every resync
#: asks again, see :meth:`KubeRayProbe.invalidate`).
CRD_SCHEMA_TTL_SECONDS = 300.0
#: Where each KubeRay kind's spec holds its Ray cluster's spec, which has ``authOptions`` since KubeRay v1.5.1.
CLUSTER_SPEC_FIELD = {RAYJOBS: "rayClusterSpec", RAYSERVICES: "rayClusterConfig"}


def crd_has_auth_options(crd: Object | None, plural: str) -> bool:
    """Whether KubeRay's CRD of ``plural`` (as read from the API server) knows ``authOptions`` in ``ray.io/v1``:
    the API server prunes fields its schema does not know, so a cluster written for an older KubeRay would
    silently run without authentication."""
    for version in ((crd or {}).get("spec") or {}).get("versions") or []:
        if version.get("name") != "v1":
            continue
        schema = ((version.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}
        spec = (schema.get("spec") or {}).get("properties") or {}
        cluster = (spec.get(CLUSTER_SPEC_FIELD[plural]) or {}).get("properties") or {}
        return "authOptions" in cluster
    return False


class KubeRayProbe:
    """Which KubeRay resources the API server serves, and whether their CRDs know ``authOptions``; answers are
    cached, changes are logged once."""

    def __init__(self, api: KubeApi, ttl: float):
        self.api = api
        self.ttl = ttl
        self._answer: set[str] | None = None
        self._checked = -1e18
        self._lock = asyncio.Lock()
        self._auth: dict[str, tuple[bool, float]] = {}
        self._auth_lock = asyncio.Lock()  # its own: a slow CRD read never holds up the discovery answer

    async def auth_supported(self, plural: str = RAYJOBS) -> bool:
        """Whether KubeRay's CRD of ``plural`` has ``authOptions`` (read from the CRD; cached until the next resync)."""
        async with self._auth_lock:
            known = self._auth.get(plural)
            if known is not None and time.monotonic() - known[1] <= max(self.ttl, CRD_SCHEMA_TTL_SECONDS):
                return known[0]
            answer = crd_has_auth_options(await self.api.get_crd(f"{plural}.ray.io"), plural)
            if known is None or known[0] != answer:
                if answer:
                    log.info("KubeRay's %s.ray.io has authOptions: Ray clusters get token authentication", plural)
                else:
                    log.warning("KubeRay's %s.ray.io has no authOptions (KubeRay older than v1.5.1)", plural)
            self._auth[plural] = (answer, time.monotonic())
            return answer

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
        self._auth = {plural: (answer, -1e18) for plural, (answer, _) in self._auth.items()}


class Reconciler:
    """A work queue of keys, ``settings.workers`` workers calling :meth:`reconcile`, and a periodic resync.

    Failed reconciles are retried with exponential backoff per key; one key is never reconciled twice
    at once. Subclasses feed the queue from their watches and implement :meth:`reconcile` and :meth:`keys`.
    """

    KIND = ""
    #: The label that names the owner on our children and the Ray pods (``trainserve.io/trainingjob``, ...).
    OWNER_LABEL = ""

    def __init__(self, api: KubeApi, settings: OperatorSettings, metrics: OperatorMetrics | None):
        self.api = api
        #: The owners' Ray pods, RayClusters and KubeRay's refusals to create pods (see :mod:`.workloadpods`).
        self.workload = WorkloadObjects(self.OWNER_LABEL)
        self.settings = settings
        self.metrics = metrics or OperatorMetrics()
        self.queue: WorkQueue[Key] = WorkQueue(settings.retry_base_seconds, settings.retry_max_seconds)
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: dict[Key, collections.deque[tuple[float, str]]] = {}
        self._loop_warned: dict[Key, float] = {}

    def keys(self) -> list[Key]:
        raise NotImplementedError

    async def reconcile(self, key: Key) -> float | None:
        """Make ``key`` right; returns when to look again, if ever."""
        raise NotImplementedError

    async def start(self) -> None:
        await self.seed_children()
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
        """Level-triggered safety net: every object is looked at again, even if a watch event was missed, and
        objects deleted while the watch was down leave the cache."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.on_resync()
            try:
                await self.relist()
            except ApiError as err:
                log.info("%s: could not list for the resync (%s); the next round tries again", self.KIND, err)
            for key in self.keys():
                self.queue.add(key)

    def on_resync(self) -> None:
        """Called before each resync round."""

    #: The children's kind in ``ray.io/v1`` (labelled with ``OWNER_LABEL``), and where their events go.
    CHILD_PLURAL = ""

    def observe_child(self, event_type: str | None, obj: Object) -> None:
        raise NotImplementedError

    async def seed_children(self) -> None:
        """The children that exist, cached before the first reconcile: the watches list kinds in no set order,
        and a reconcile of a parent whose children are not cached yet would try to create them again (a 409,
        adopted, but a write all the same). Without KubeRay there is nothing to list."""
        namespaces = () if self.settings.all_namespaces else self.settings.namespaces
        try:
            children = await self.api.list_custom(
                RAY_GROUP, RAY_VERSION, self.CHILD_PLURAL, namespaces, self.OWNER_LABEL
            )
        except ApiError as err:
            log.info("%s: children not listed at start (%s); the watch brings them", self.KIND, err)
            return
        for child in children:
            self.observe_child("ADDED", child)

    #: The plural of the kind in ``trainserve.io`` (for reads and lists).
    PLURAL = ""

    def parents(self) -> dict[Key, Object]:
        """The cached objects of the kind, by key."""
        raise NotImplementedError

    def observe_parent(self, event_type: str, obj: Object) -> None:
        """What a watch event on the kind does to the cache and the queue."""
        raise NotImplementedError

    async def relist(self) -> None:
        """The cache against a fresh list: a deletion during a watch outage sends no event. Only an object still
        cached as the one listed before is dropped (a namesake created meanwhile stays)."""
        before = {key: uid_of(obj) for key, obj in self.parents().items()}
        namespaces = () if self.settings.all_namespaces else self.settings.namespaces
        listed = {object_key(obj): obj for obj in await self.api.list_custom(GROUP, VERSION, self.PLURAL, namespaces)}
        for key, uid in before.items():
            if key not in listed:
                self.on_gone(key, uid)
        # What the list has and the cache lacks (an ADDED lost with a watch): added when this replica runs alone.
        # With peering, a standby's watches are paused by Kopf and it must stay idle; there the watch's own
        # re-list on resuming brings such objects in.
        if self.settings.standalone:
            for key, obj in listed.items():
                if key not in self.parents():
                    self.observe_parent("ADDED", obj)

    def forget(self, key: Key) -> None:
        """``key``'s object is gone: no queued work, no memory of it."""
        self.queue.drop(key)
        self._writes.pop(key, None)
        self.workload.forget(key)

    # --- the Ray pods, their RayClusters and KubeRay's Warning Events (fed by handlers.workloadpods) -------

    def observe_pod(self, event_type: str | None, obj: Object) -> None:
        self._queue_owner(self.workload.observe_pod(event_type, obj))

    def observe_raycluster(self, event_type: str | None, obj: Object) -> None:
        self._queue_owner(self.workload.observe_cluster(event_type, obj))

    def observe_warning_event(self, event_type: str | None, obj: Object) -> None:
        self._queue_owner(self.workload.observe_event(event_type, obj))

    def _queue_owner(self, key: Key | None) -> None:
        if key is not None and key in self.parents():
            self.queue.add(key)

    async def owner_alive(self, key: Key, body: Object) -> bool:
        """Whether ``body`` still exists as this very object (same uid): asked before creating any child, since
        a deletion during a watch outage leaves it in the cache. A deleted one is forgotten; a namesake found in
        its place is cached (and reconciled on its own)."""
        found = await self.api.get_custom(self.PLURAL, *key)
        uid = uid_of(body)
        if found is not None and uid_of(found) == uid:
            return True
        log.info("%s %s/%s was deleted; no children are created for it", self.KIND, *key)
        self.on_gone(key, uid)
        if found is not None and key not in self.parents():
            self.observe_parent("ADDED", found)
        return False

    async def patch_parent_status(self, key: Key, patch: Object) -> Object | None:
        """A merge patch of the object's status; None when it is gone (a deletion, not a failure)."""
        try:
            return await self.api.patch_status(self.PLURAL, *key, patch)
        except ApiError as err:
            if err.status != 404:
                raise
        log.debug("%s %s/%s is gone; not reconciled further", self.KIND, *key)
        self.on_gone(key, uid_of(self.parents().get(key) or {}))
        return None

    def on_gone(self, key: Key, uid: str | None) -> None:
        """The object ``uid`` behind ``key`` no longer exists (found by a read, not a watch event); a namesake
        cached since is left alone."""
        cached = self.parents().get(key)
        if cached is not None and uid_of(cached) == uid:
            self.observe_parent("DELETED", cached)

    def wrote(self, key: Key, what: str) -> None:
        """Counts a write for ``key``; more than :data:`WRITES_PER_MINUTE` in a minute is logged as a likely
        write loop (once a minute), with what was written."""
        now = time.monotonic()
        recent = self._writes.setdefault(key, collections.deque())
        recent.append((now, what))
        while recent and now - recent[0][0] > 60:
            recent.popleft()
        if len(recent) > WRITES_PER_MINUTE and now - self._loop_warned.get(key, -1e18) > 60:
            self._loop_warned[key] = now
            kinds = collections.Counter(entry for _, entry in recent).most_common(3)
            log.warning(
                "%s %s/%s: %d writes in the last minute, a write loop? Most: %s",
                self.KIND,
                *key,
                len(recent),
                "; ".join(f"{what} x{count}" for what, count in kinds),
            )

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
        namespace, name = object_key(body)
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
