"""The Ray pods, RayClusters and KubeRay Warning Events of one kind's objects, as the watches delivered them.

Only what is needed to tell a failure is kept (status, a few labels and times), and only for our own objects:
the watches are label- or field-selected on the server, pods and clusters are filed under the owner their
``trainserve.io/...`` label names, and Events only under a RayCluster that is ours.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trainserve.plans.podhealth import REFUSED_CREATE_REASONS, PodHealth, pod_health

Key = tuple[str, str]
Object = dict[str, Any]


def _slim(obj: Object, *fields: str) -> Object:
    """``metadata`` (without managed fields and annotations) and the named top-level fields."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("managedFields", "annotations")}
    return {"metadata": metadata, **{f: obj[f] for f in fields if f in obj}}


class WorkloadObjects:
    """Pods and RayClusters by owner key (namespace, owner name), Warning Events by RayCluster."""

    def __init__(self, owner_label: str):
        self.owner_label = owner_label
        self.pods: dict[Key, dict[str, Object]] = {}
        self.clusters: dict[Key, dict[str, Object]] = {}
        #: (namespace, cluster) -> owner key, for routing Events.
        self._cluster_owner: dict[Key, Key] = {}
        #: (namespace, cluster) -> event name -> Event.
        self.events: dict[Key, dict[str, Object]] = {}

    def owner_of(self, obj: Object) -> Key | None:
        metadata = obj.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(self.owner_label)
        return (str(metadata.get("namespace") or ""), str(owner)) if owner else None

    def observe_pod(self, event_type: str | None, pod: Object) -> Key | None:
        """Files the pod under its owner; returns the owner's key (None: not one of ours)."""
        return self._file(self.pods, event_type, _slim(pod, "spec", "status"))

    def observe_cluster(self, event_type: str | None, cluster: Object) -> Key | None:
        key = self._file(self.clusters, event_type, _slim(cluster, "status"))
        if key is not None:
            metadata = cluster.get("metadata") or {}
            where = (key[0], str(metadata.get("name")))
            if event_type == "DELETED":
                self._cluster_owner.pop(where, None)
                self.events.pop(where, None)
            else:
                self._cluster_owner[where] = key
        return key

    def observe_event(self, event_type: str | None, event: Object) -> Key | None:
        """Keeps a refused pod create of one of our RayClusters; returns the cluster's owner."""
        involved = event.get("involvedObject") or {}
        where = (str(involved.get("namespace") or ""), str(involved.get("name") or ""))
        owner = self._cluster_owner.get(where)
        if owner is None or event.get("reason") not in REFUSED_CREATE_REASONS:
            return None
        name = str((event.get("metadata") or {}).get("name"))
        if event_type == "DELETED":
            self.events.get(where, {}).pop(name, None)
        else:
            fields = ("metadata", "involvedObject", "reason", "message", "lastTimestamp", "eventTime")
            self.events.setdefault(where, {})[name] = {k: event.get(k) for k in fields}
        return owner

    def _file(self, store: dict[Key, dict[str, Object]], event_type: str | None, obj: Object) -> Key | None:
        key = self.owner_of(obj)
        if key is None:
            return None
        name = str(obj["metadata"].get("name"))
        if event_type == "DELETED":
            store.get(key, {}).pop(name, None)
            if not store.get(key):
                store.pop(key, None)
        else:
            store.setdefault(key, {})[name] = obj
        return key

    def health(self, key: Key, now: datetime) -> PodHealth:
        clusters = list(self.clusters.get(key, {}).values())
        events = [e for c in clusters for e in self.events.get((key[0], str(c["metadata"].get("name"))), {}).values()]
        return pod_health(self.pods.get(key, {}).values(), clusters, events, now)

    def forget(self, key: Key) -> None:
        """The owner is gone: its pods and clusters (and their Events) are forgotten."""
        self.pods.pop(key, None)
        for name in self.clusters.pop(key, {}):
            self._cluster_owner.pop((key[0], name), None)
            self.events.pop((key[0], name), None)
