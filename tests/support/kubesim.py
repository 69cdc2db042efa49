"""A Kubernetes API for operator tests: kmock's emulator with what the API server adds to objects, the
resources trainserve uses registered, a simulated KubeRay controller, and the real operator in-process."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from tests.support import kmock_membership
from tests.support.documents import our_crd
from tests.support.podidentity import TokenRegistry, authorize
from tests.support.schemas import KUBERAY_CRDS, crd_from_file
from trainserve.runner import Operator
from trainserve.settings import OperatorSettings

TRAININGJOBS = "trainserve.io/v1alpha1/trainingjobs"
MODELSERVICES = "trainserve.io/v1alpha1/modelservices"
RAYJOBS = "ray.io/v1/rayjobs"
RAYSERVICES = "ray.io/v1/rayservices"
NETWORKPOLICIES = "networking.k8s.io/v1/networkpolicies"
PODS = "v1/pods"
RAYCLUSTERS = "ray.io/v1/rayclusters"
EVENTS = "v1/events"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
NAMESPACE = "ml"

kmock_membership.install()  # each request dispatched without filtering the whole request log again


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """The emulator plus what a real API server does to objects: uid, creationTimestamp, resourceVersion,
    and ``metadata.generation`` that moves only when ``spec`` changes."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    #: Fault injection: called with each request from anyone but the test; an HTTP status makes the server
    #: answer that status (429 with ``Retry-After: 1``) without applying the request.
    faults: Callable[[kmock.Request], int | None] | None = attrs.field(default=None, init=False)
    #: Likewise, but the request is applied first and its answer lost (a write that happened, reported as failed).
    faults_after: Callable[[kmock.Request], int | None] | None = attrs.field(default=None, init=False)
    #: While True, new watches are refused (503): a watch outage; see also :meth:`cut_watches`.
    watch_down: bool = attrs.field(default=False, init=False)
    _watch_epoch: int = attrs.field(default=0, init=False)
    #: What each pod's container wrote, by (namespace, pod, container); served by ``GET .../pods/NAME/log``.
    pod_logs: dict[tuple[str, str, str], list[str]] = attrs.field(factory=dict, init=False)
    #: Containers that have exited: a follow of their log ends once it has sent every line.
    exited: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    #: Objects each watch sent, by resource (after the label and field selectors): what reached a watcher.
    watch_sent: dict[str, int] = attrs.field(factory=dict, init=False)
    #: ServiceAccount tokens of the Ray pods (tests/support/kuberay_local.py): a request carrying one is
    #: authorized against the Roles bound to its account, as the API server does; other callers are not checked.
    tokens: TokenRegistry = attrs.field(factory=TokenRegistry, init=False)

    def cut_watches(self) -> None:
        """Ends every open watch stream; the next event on each is lost, as when a connection drops. Watchers
        reconnect and get the objects that exist then, but no DELETED event for what went meanwhile."""
        self._watch_epoch += 1

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        epoch = self._watch_epoch
        selected = _selection(request)
        async for item in super()._serve_watch(request):
            if self._watch_epoch != epoch:
                return
            if isinstance(item, dict) and not selected(item.get("object") or {}):
                continue
            if isinstance(item, dict) and request.resource is not None:
                resource = f"{request.resource.group}/{request.resource.version}/{request.resource.plural}".lstrip("/")
                self.watch_sent[resource] = self.watch_sent.get(resource, 0) + 1
            yield item

    async def _serve_list(self, request: kmock.Request) -> Any:
        """The API server's ``labelSelector`` and ``fieldSelector`` (kmock ignores both)."""
        answer = await super()._serve_list(request)
        selected = _selection(request)
        return {**answer, "items": [item for item in answer["items"] if selected(item)]}

    async def _serve_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """``GET /api/v1/namespaces/NS/pods/NAME/log[?container=C&follow=true&tailLines=N]``, as plain text."""
        assert request.namespace is not None and request.name is not None
        pod = self._stored(kmock.Request(resource=kmock.resource(PODS), namespace=request.namespace, name=request.name))
        if pod is None:
            return _failure(404)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.params.get("container") or (containers[0] if len(containers) == 1 else None)
        if container not in containers:
            return _failure(400)
        key = (request.namespace, request.name, container)
        lines = self.pod_logs.setdefault(key, [])
        tail = request.params.get("tailLines")
        sent = max(0, len(lines) - int(tail)) if tail else 0
        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(raw)
        follow = request.params.get("follow") in _GO_TRUE  # the API server parses it with Go's strconv.ParseBool
        while True:
            for line in lines[sent:]:
                await response.write(f"{line}\n".encode())
            sent = len(lines)
            if not follow or key in self.exited:
                break
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        account = self.tokens.account_of(request)
        if account is not None:
            call = authorize(self.objects, account, request)
            self.tokens.calls.append(call)
            if not call.allowed:
                return _failure(403, f"{call.account} may not {call.verb} {call.resource} {call.name}")
        operator = not _from_test(request)
        fault = self.faults(request) if self.faults and operator else None
        if self.watch_down and operator and request.action == kmock.action.WATCH:
            fault = 503
        if fault:
            return _failure(fault)
        if str(request.resource) == str(kmock.resource(PODS)) and request.subresource == "log":
            return await self._serve_log(request)
        after = self.faults_after(request) if self.faults_after and operator and request.action in _WRITES else None
        response = await self._apply(request)
        return _failure(after) if after else response

    async def _apply(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta.setdefault("generation", 1)
                meta.setdefault("namespace", request.namespace)
                if meta.get("generateName") and not meta.get("name"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            elif request.action == kmock.action.UPDATE and request.name is not None:
                stored = self._stored(request)
                if stored is not None and request.subresource is None and "spec" in data:
                    old_meta = stored.get("metadata", {})
                    merged = kmock.Object(stored)
                    merged.patch({"spec": data["spec"]})
                    if merged.raw.get("spec") != stored.get("spec"):
                        meta["generation"] = int(old_meta.get("generation", 1)) + 1
            meta["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)

    async def _serve_create(self, request: kmock.Request) -> Any:
        """201 Created, as the API server answers (the kubernetes client reads the body only then)."""
        body = await super()._serve_create(request)
        return kmock.Response(status=201, payload=body)

    def _stored(self, request: kmock.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key].raw
        return None

    async def store(self, resource: str, namespace: str, obj: dict[str, Any]) -> None:
        """What a create does to the stored objects and to the watchers, without the request log: for objects other
        controllers make by the thousand (no HTTP round trip, no request logged per object)."""
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
        meta["resourceVersion"] = str(next(self._versions))
        key = kmock.resource(resource)
        self.objects[key, namespace, meta["name"]] = obj
        await self._buses[key].put({"type": "ADDED", "object": self.objects[key, namespace, meta["name"]].raw})

    def request_count(self) -> int:
        return len(self._requests)

    def writes(self, since: int = 0) -> list[kmock.Request]:
        """Write requests made by anyone but the test itself (the test uses kmock's own client)."""
        return [
            r
            for r in list(self._requests)[since:]
            if str(r.method.value).upper() in WRITE_METHODS and not _from_test(r)
        ]


_WRITES = {kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE}
_GO_TRUE = {"1", "t", "T", "true", "TRUE", "True"}


def _selection(request: kmock.Request) -> Callable[[dict[str, Any]], bool]:
    """Whether an object passes the request's ``labelSelector`` (``k=v``, ``k!=v``, ``k``) and ``fieldSelector``
    (``a.b=v``, ``a.b!=v``), the forms the operator and ``trainserve logs`` send."""
    labels = [term for term in (request.params.get("labelSelector") or "").split(",") if term]
    fields = [term for term in (request.params.get("fieldSelector") or "").split(",") if term]

    def field(obj: dict[str, Any], path: str) -> str:
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    def holds(term: str, read: Callable[[str], str | None]) -> bool:
        if "!=" in term:
            name, value = term.split("!=", 1)
            return read(name) != value
        if "=" in term:
            name, value = term.split("=", 1)
            return read(name.rstrip("=")) == value
        return read(term) is not None

    def selected(obj: dict[str, Any]) -> bool:
        own = (obj.get("metadata") or {}).get("labels") or {}
        return all(holds(t, own.get) for t in labels) and all(holds(t, lambda p: field(obj, p)) for t in fields)

    return selected


def _failure(status: int, message: str = "injected fault") -> aiohttp.web.StreamResponse:
    """An API server's error answer (``Retry-After`` with 429, as the API server's priority and fairness does)."""
    headers = {"Retry-After": "1"} if status == 429 else {}
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status, "message": message}
    return aiohttp.web.json_response(body, status=status, headers=headers)


def _from_test(request: kmock.Request) -> bool:
    """Requests the test itself makes (kmock's own client) rather than the operator."""
    return str(request.headers.get("User-Agent", "")).startswith("kmock/")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(emulator: Emulator, *, kuberay: bool = True) -> None:
    info = kmock.ResourceInfo
    emulator.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs={"list", "watch", "get"})
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch", "get", "create"}
    )
    verbs = {"create", "get", "list", "watch", "patch", "delete"}
    emulator.resources["v1/events"] = info(kind="Event", namespaced=True, verbs=verbs)
    emulator.resources["v1/secrets"] = info(kind="Secret", namespaced=True, verbs=verbs)
    emulator.resources["v1/serviceaccounts"] = info(kind="ServiceAccount", namespaced=True, verbs=verbs)
    emulator.resources["rbac.authorization.k8s.io/v1/roles"] = info(kind="Role", namespaced=True, verbs=verbs)
    emulator.resources["rbac.authorization.k8s.io/v1/rolebindings"] = info(
        kind="RoleBinding", namespaced=True, verbs=verbs
    )
    emulator.resources[TRAININGJOBS] = info(
        kind="TrainingJob",
        namespaced=True,
        singular="trainingjob",
        shortnames={"tj"},
        categories={"trainserve"},
        verbs=verbs,
        subresources={"status"},
    )
    emulator.resources[MODELSERVICES] = info(
        kind="ModelService",
        namespaced=True,
        singular="modelservice",
        shortnames={"ms"},
        categories={"trainserve"},
        verbs=verbs,
        subresources={"status", "scale"},
    )
    emulator.resources[NETWORKPOLICIES] = info(kind="NetworkPolicy", namespaced=True, verbs=verbs)
    emulator.resources[PODS] = info(kind="Pod", namespaced=True, verbs=verbs, subresources={"status", "log"})
    emulator.objects["v1/namespaces", None, NAMESPACE] = {"metadata": {"name": NAMESPACE}}
    for plural in ("trainingjobs", "modelservices"):
        crd = our_crd(plural)
        emulator.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, crd["metadata"]["name"]] = crd
    if kuberay:
        install_kuberay_resource(emulator)
        for crd in kuberay_crds():
            emulator.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, crd["metadata"]["name"]] = crd


def kuberay_crds(*, auth_options: bool = True) -> list[dict[str, Any]]:
    """KubeRay v1.7.0's RayJob and RayService CRDs as far as the operator reads them (names, versions, and the
    cluster spec's ``authOptions`` taken from the vendored CRDs; the megabytes of pod schema left out, which would
    only slow every CRD list and watch); ``auth_options=False``: as a KubeRay older than v1.5.1 installs them."""
    crds = []
    for plural, field in (("rayjobs", "rayClusterSpec"), ("rayservices", "rayClusterConfig")):
        vendored = crd_from_file(KUBERAY_CRDS / f"ray.io_{plural}.yaml")
        versions = []
        for version in vendored["spec"]["versions"]:
            cluster = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][field]
            known = cluster["properties"]  # v1alpha1 never had authOptions
            kept = {"authOptions": known["authOptions"]} if auth_options and "authOptions" in known else {}
            schema = {"type": "object", "properties": {field: {"type": "object", "properties": kept}}}
            versions.append(
                {
                    **{key: version[key] for key in ("name", "served", "storage")},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": schema}}},
                }
            )
        spec = {key: vendored["spec"][key] for key in ("group", "names", "scope")} | {"versions": versions}
        crds.append(
            {
                **{k: vendored[k] for k in ("apiVersion", "kind")},
                "metadata": {"name": vendored["metadata"]["name"]},
                "spec": spec,
            }
        )
    return copy.deepcopy(crds)


def install_kuberay_resource(emulator: Emulator) -> None:
    for resource, kind in ((RAYJOBS, "RayJob"), (RAYSERVICES, "RayService"), (RAYCLUSTERS, "RayCluster")):
        emulator.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            namespaced=True,
            singular=kind.lower(),
            verbs={"create", "get", "list", "watch", "patch", "delete"},
            subresources={"status"},
        )


async def install_kuberay(emulator: Emulator) -> None:
    """KubeRay appears: its resources are served and its CRD objects are created (Kopf rescans on CRD events)."""
    install_kuberay_resource(emulator)
    for crd in kuberay_crds():
        async with emulator.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd) as response:
            assert response.status < 300, await response.text()


class Cluster:
    """The test's hands on the emulated API: create and edit TrainingJobs, play KubeRay."""

    def __init__(self, emulator: Emulator):
        self.api = emulator

    def _path(self, resource: str, name: str | None = None, namespace: str = NAMESPACE) -> str:
        group_version, plural = resource.rsplit("/", 1)
        root = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        path = f"{root}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    async def _send(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.api.request(method, path, json=body, headers=headers) as response:
            assert response.status < 300, f"{method} {path}: {response.status} {await response.text()}"
            result: dict[str, Any] = await response.json()
            return result

    async def create_trainingjob(self, document: dict[str, Any]) -> dict[str, Any]:
        document = {**document, "metadata": {**document.get("metadata", {}), "namespace": NAMESPACE}}
        return await self._send("POST", self._path(TRAININGJOBS), document)

    async def patch_trainingjob(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._send("PATCH", self._path(TRAININGJOBS, name), patch)

    async def delete_trainingjob(self, name: str) -> None:
        await self._send("DELETE", self._path(TRAININGJOBS, name))

    async def collect_garbage(self, rayjob: str | None = None) -> None:
        """What Kubernetes' garbage collector does (the emulator has none): deletes every object whose controlling
        owner no longer exists (a deleted TrainingJob's RayJob and access objects); ``rayjob`` is deleted in any
        case (its finalizer is gone)."""
        live = {obj.raw.get("metadata", {}).get("uid") for obj in list(self.api.objects.values()) if not obj.deleted}
        for (resource, namespace, name), obj in list(self.api.objects.items()):
            if obj.deleted:
                continue
            owners = [ref for ref in obj.raw.get("metadata", {}).get("ownerReferences") or [] if ref.get("controller")]
            orphan = owners and all(ref.get("uid") not in live for ref in owners)
            if not obj.deleted and (orphan or (name == rayjob and str(resource) == str(kmock.resource(RAYJOBS)))):
                group_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
                await self._send(
                    "DELETE", self._path(f"{group_version}/{resource.plural}", name, namespace or NAMESPACE)
                )

    def trainingjob(self, name: str) -> dict[str, Any] | None:
        try:
            obj = self.api.objects[TRAININGJOBS, NAMESPACE, name]
        except KeyError:
            return None
        return None if obj.deleted else obj.raw

    def status(self, name: str) -> dict[str, Any]:
        return (self.trainingjob(name) or {}).get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == type_), {})

    def rayjobs(self) -> dict[str, dict[str, Any]]:
        out = {}
        for (resource, _, name), obj in list(self.api.objects.items()):
            if str(resource) == str(kmock.resource(RAYJOBS)) and not obj.deleted:
                out[name] = obj.raw
        return out

    def objects_of(self, resource: str) -> list[str]:
        return [
            name
            for (res, _, name), obj in list(self.api.objects.items())
            if str(res) == str(kmock.resource(resource)) and not obj.deleted
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for (resource, _, _), obj in list(self.api.objects.items()):
            is_event = str(resource) == str(kmock.resource("v1/events")) and not obj.deleted
            if is_event and obj.raw.get("involvedObject", {}).get("name") == name:
                out.append(obj.raw)
        return out

    # --- ModelServices ----------------------------------------------------------------------------------------

    async def create_modelservice(self, document: dict[str, Any]) -> dict[str, Any]:
        document = {**document, "metadata": {**document.get("metadata", {}), "namespace": NAMESPACE}}
        return await self._send("POST", self._path(MODELSERVICES), document)

    async def patch_modelservice(self, name: str, patch: dict[str, Any], subresource: str = "") -> dict[str, Any]:
        path = self._path(MODELSERVICES, name) + (f"/{subresource}" if subresource else "")
        return await self._send("PATCH", path, patch)

    async def patch_network_policy(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of a NetworkPolicy, as a person with kubectl would make it."""
        return await self._send("PATCH", self._path(NETWORKPOLICIES, name), patch)

    async def delete_modelservice(self, name: str) -> None:
        await self._send("DELETE", self._path(MODELSERVICES, name))

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.api.objects[resource, NAMESPACE, name]
        except KeyError:
            return None
        return None if obj.deleted else obj.raw

    def service_status(self, name: str) -> dict[str, Any]:
        return (self.get(MODELSERVICES, name) or {}).get("status") or {}

    def service_condition(self, name: str, type_: str) -> dict[str, Any]:
        return next((c for c in self.service_status(name).get("conditions", []) if c["type"] == type_), {})

    def serve_config(self, name: str) -> dict[str, Any]:
        """The RayService's serveConfigV2, parsed; {} when there is no RayService."""
        rayservice = self.get(RAYSERVICES, name)
        return yaml.safe_load(rayservice["spec"]["serveConfigV2"]) if rayservice else {}

    def served(self, name: str) -> dict[str, Any]:
        """The model deployment's user_config (models, split) in the RayService's serve config."""
        config = self.serve_config(name)
        if not config:
            return {}
        deployments = config["applications"][0]["deployments"]
        server: dict[str, Any] = next(d for d in deployments if d["name"] == "ModelServer")
        return server

    async def rayservice_ready(self, name: str, app: str | None = None, workers: int = 1, ready: bool = True) -> None:
        """What KubeRay reports once the Ray cluster runs and Serve deployed the latest config."""
        rayservice = self.get(RAYSERVICES, name)
        assert rayservice is not None, f"no RayService {name}"
        generation = rayservice["metadata"].get("generation", 1)
        app_status = {"status": "RUNNING" if ready else "DEPLOY_FAILED", "serveDeploymentStatuses": {}}
        if not ready:
            app_status["message"] = "ModelServer: replica failed to start: cannot load the model"
        status = {
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "RayServiceReady"}],
            "pendingServiceStatus": None,  # no upgrade (or it finished): KubeRay empties it
            "activeServiceStatus": {
                "applicationStatuses": {app or name: app_status},
                "rayClusterStatus": {"readyWorkerReplicas": workers, "desiredWorkerReplicas": workers},
            },
        }
        await self._send("PATCH", self._path(RAYSERVICES, name) + "/status", {"status": status})

    async def rayservice_upgrading(self, name: str, ready_workers: int = 0) -> None:
        """What KubeRay v1.7 reports while a new cluster is prepared next to the serving one (the old one serves)."""
        await self.rayservice_ready(name)
        pending = {
            "rayClusterName": f"{name}-next",
            "rayClusterStatus": {"readyWorkerReplicas": ready_workers, "desiredWorkerReplicas": 1},
        }
        upgrade = {"type": "UpgradeInProgress", "status": "True", "reason": "BothActivePendingClustersExist"}
        status = (self.get(RAYSERVICES, name) or {})["status"]
        patch = {"conditions": [*status["conditions"], upgrade], "pendingServiceStatus": pending}
        patch["activeServiceStatus"] = {**status["activeServiceStatus"], "rayClusterName": f"{name}-now"}
        await self._send("PATCH", self._path(RAYSERVICES, name) + "/status", {"status": patch})

    # --- the simulated KubeRay: moves RayJob status the way KubeRay does -----------------------------------

    async def rayjob_status(self, name: str, deployment: str, job: str = "", **extra: Any) -> None:
        status = {"jobDeploymentStatus": deployment, "jobStatus": job, **extra}
        await self._send("PATCH", self._path(RAYJOBS, name) + "/status", {"status": status})

    async def run_rayjob(self, name: str) -> None:
        await self.rayjob_status(name, "Initializing")
        await self.rayjob_status(name, "Running", "RUNNING")

    async def succeed_rayjob(self, name: str) -> None:
        await self.rayjob_status(name, "Complete", "SUCCEEDED", endTime=_now())

    async def fail_rayjob(self, name: str, reason: str = "AppFailed", message: str = "the job exited with 1") -> None:
        await self.rayjob_status(name, "Failed", "FAILED", reason=reason, message=message)

    async def follow_suspend(self, name: str) -> None:
        """What KubeRay does with ``spec.suspend``: tear the cluster down, or bring it back."""
        rayjob = self.rayjobs()[name]
        if rayjob["spec"].get("suspend"):
            await self.rayjob_status(name, "Suspended", "")
        else:
            await self.run_rayjob(name)

    async def report_progress(self, name: str, status: dict[str, Any]) -> None:
        """What the training workload does (it patches its own TrainingJob's status)."""
        await self._send("PATCH", self._path(TRAININGJOBS, name) + "/status", {"status": status})

    # --- the simulated KubeRay: its RayClusters, their Ray pods and its Warning Events -----------------------

    async def create_raycluster(self, owner_resource: str, owner: str, cluster: str) -> dict[str, Any]:
        """The RayCluster KubeRay makes for a RayJob or RayService: the owner's labels copied, plus its own
        (ray-operator/controllers/ray/rayjob_controller.go ``constructRayClusterForRayJob``)."""
        parent = self.get(owner_resource, owner)
        assert parent is not None, f"no {owner_resource} {owner}"
        labels = {**parent["metadata"].get("labels", {}), "ray.io/originated-from-cr-name": owner}
        body = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": cluster, "labels": labels}}
        body["spec"] = parent["spec"].get("rayClusterSpec") or parent["spec"]["rayClusterConfig"]
        return await self._send("POST", self._path(RAYCLUSTERS), body)

    async def create_ray_pod(
        self,
        owner_resource: str,
        owner: str,
        cluster: str,
        pod: str,
        status: dict[str, Any],
        *,
        group: str = "head",
        created: str | None = None,
    ) -> dict[str, Any]:
        """A Ray pod as KubeRay creates it from the owner's pod template (its labels kept, KubeRay's added:
        ray-operator/controllers/ray/common/pod.go ``labelPod``), with ``status`` as the kubelet reports it."""
        parent = self.get(owner_resource, owner)
        assert parent is not None, f"no {owner_resource} {owner}"
        spec = parent["spec"].get("rayClusterSpec") or parent["spec"]["rayClusterConfig"]
        template = spec["headGroupSpec"]["template"] if group == "head" else spec["workerGroupSpecs"][0]["template"]
        labels = {
            **template["metadata"].get("labels", {}),
            "ray.io/cluster": cluster,
            "ray.io/node-type": "head" if group == "head" else "worker",
            "ray.io/group": "headgroup" if group == "head" else spec["workerGroupSpecs"][0]["groupName"],
            "ray.io/is-ray-node": "yes",
        }
        metadata: dict[str, Any] = {"name": pod, "labels": labels}
        if created:
            metadata["creationTimestamp"] = created
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"], "status": status}
        return await self._send("POST", self._path(PODS), body)

    async def pod_status(self, pod: str, status: dict[str, Any], namespace: str = NAMESPACE) -> None:
        """What the scheduler and the kubelet report; give ``phase``, ``conditions`` and ``containerStatuses``
        (a merge patch replaces each list whole)."""
        await self._send("PATCH", self._path(PODS, pod, namespace) + "/status", {"status": status})

    async def delete_pod(self, pod: str, namespace: str = NAMESPACE) -> None:
        await self._send("DELETE", self._path(PODS, pod, namespace))

    async def kuberay_warning(self, cluster: str, reason: str, message: str, when: str, name: str = "") -> None:
        """A Warning Event KubeRay's recorder posts on a RayCluster (ray-operator/controllers/ray/
        raycluster_controller.go, e.g. ``FailedToCreateWorkerPod`` when the API server refuses the pod)."""
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name or f"{cluster}.{uuid.uuid4().hex[:12]}"},
            "involvedObject": {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "name": cluster,
                "namespace": NAMESPACE,
            },
            "type": "Warning",
            "reason": reason,
            "message": message,
            "source": {"component": "raycluster-controller"},
            "firstTimestamp": when,
            "lastTimestamp": when,
            "count": 1,
        }
        await self._send("POST", self._path(EVENTS), event)

    async def write_log(self, pod: str, container: str, *lines: str, exited: bool = False) -> None:
        """What a container prints; ``exited`` ends it (a follow of its log then ends)."""
        key = (NAMESPACE, pod, container)
        self.api.pod_logs.setdefault(key, []).extend(lines)
        if exited:
            self.api.exited.add(key)


def running_pod_status() -> dict[str, Any]:
    """A scheduled pod whose Ray container runs."""
    return {
        "phase": "Running",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "ray", "image": "ray", "imageID": "", "ready": True, "restartCount": 0, "state": {"running": {}}}
        ],
    }


def container_status(name: str, **state: Any) -> dict[str, Any]:
    """A pod that was scheduled and whose container ``name`` is in ``state`` (``waiting``/``terminated``...)."""
    status = running_pod_status()
    status["phase"] = "Running" if "running" in state else "Pending"
    status["containerStatuses"] = [
        {"name": name, "ready": False, "restartCount": 3, "image": "x", "imageID": "", **state}
    ]
    return status


async def eventually(check: Callable[[], Any], timeout: float = 20.0, message: str = "") -> Any:
    """Polls ``check`` until it returns something truthy (and no AssertionError); returns that."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
        except (AssertionError, KeyError, TypeError) as err:
            last = err
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting: {message or check}; last error: {last!r}")
        await asyncio.sleep(0.05)


def operator_settings(emulator: Emulator, **overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "api_server": str(emulator.url).rstrip("/"),
        "all_namespaces": True,
        "standalone": True,
        "metrics_port": 0,
        "resync_seconds": 0.5,
        "kuberay_probe_seconds": 0.2,
        "retry_base_seconds": 0.1,
        "retry_max_seconds": 1.0,
        "workers": 2,
    }
    values.update(overrides)
    return OperatorSettings(**values)


@contextlib.asynccontextmanager
async def running_operator(settings: OperatorSettings) -> AsyncIterator[Operator]:
    """The real operator (Kopf + controller) in this event loop, until the block ends."""
    operator = Operator(settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(operator.run(stop_flag=stop, ready_flag=ready))
    await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield operator
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
