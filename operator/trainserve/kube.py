"""Small typed helpers over the ``kubernetes`` client; every blocking call runs in a thread, off the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import kubernetes  # type: ignore[import-untyped]
import urllib3
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from trainserve.api.base import GROUP, VERSION
from trainserve.settings import OperatorSettings

log = logging.getLogger("trainserve.kube")

Object = dict[str, Any]
T = TypeVar("T")

RAY_GROUP, RAY_VERSION, RAYJOBS, RAYSERVICES = "ray.io", "v1", "rayjobs", "rayservices"
TRAININGJOBS, MODELSERVICES = "trainingjobs", "modelservices"


#: Answers worth the same call again after a pause: throttled, server errors, and no answer at all (0).
TRANSIENT = frozenset({0, 429, 500, 502, 503, 504})
#: Tries of one call before its error reaches the reconcile (which is then retried with the queue's backoff).
CALL_TRIES = 4
#: Seconds to connect and to wait for an answer, per call: a connection that the API server or a proxy dropped
#: without a word must not hold a worker thread for ever (client-go finds those with HTTP/2 pings).
REQUEST_TIMEOUT_SECONDS = (10.0, 60.0)
CALL_BACKOFF_SECONDS = 0.2
#: The longest ``Retry-After`` honoured; a server asking for more is asked again sooner by the queue.
MAX_RETRY_AFTER_SECONDS = 10.0


class ApiError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, status: int, reason: str, message: str = "", retry_after: float | None = None):
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT


def _api_error(err: ApiException) -> ApiError:
    message = ""
    try:
        message = str(json.loads(err.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        message = str(err.body or "")[:200]
    return ApiError(int(err.status or 0), str(err.reason or "Error"), message, _retry_after(err.headers))


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (the API server sends whole seconds with 429 and some 5xx)."""
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def retry_delay(err: ApiError, tried: int) -> float:
    """The pause before try ``tried + 1``: the server's ``Retry-After`` (capped), else exponential with jitter."""
    if err.retry_after is not None:
        return min(err.retry_after, MAX_RETRY_AFTER_SECONDS)
    return float(CALL_BACKOFF_SECONDS * 2.0 ** (tried - 1) * random.uniform(0.5, 1.0))


def controller_uid(obj: Object) -> str | None:
    """The uid of the object's controlling owner, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def client_configuration(settings: OperatorSettings) -> kubernetes.client.Configuration:
    """The usual resolution: an explicit server (tests), in-cluster, then ``KUBECONFIG``/``~/.kube/config``."""
    config = kubernetes.client.Configuration()
    if settings.api_server:
        config.host = settings.api_server.rstrip("/")
        config.verify_ssl = False
        return config
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)
    return config


class KubeApi:
    """The API calls the controllers make, and nothing else."""

    def __init__(self, api_client: kubernetes.client.ApiClient):
        self.client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)
        self.networking = kubernetes.client.NetworkingV1Api(api_client)
        #: Told the HTTP status of each call tried again (the operator counts them in its metrics).
        self.on_retry: Callable[[int], None] = lambda status: None

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> KubeApi:
        return cls(kubernetes.client.ApiClient(client_configuration(settings)))

    def close(self) -> None:
        self.client.close()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One API call off the event loop; a transient failure is tried again on its own (``Retry-After``
        honoured), so one 500 or 429 does not abort the whole reconcile. Writes are safe to repeat: a create
        that was applied before its 500 answers 409 next time, and callers check who owns what they find."""

        def call() -> T:
            try:
                return fn(*args, **{"_request_timeout": REQUEST_TIMEOUT_SECONDS, **kwargs})
            except ApiException as err:
                raise _api_error(err) from None
            except (OSError, urllib3.exceptions.HTTPError) as err:  # refused, reset, timed out, DNS...
                raise ApiError(0, type(err).__name__, str(err)) from None

        for tried in range(1, CALL_TRIES + 1):
            try:
                return await asyncio.to_thread(call)
            except ApiError as err:
                if not err.transient or tried == CALL_TRIES:
                    raise
                delay = retry_delay(err, tried)
                self.on_retry(err.status)
                log.debug("%s answered %s; trying again in %.2fs", getattr(fn, "__name__", "call"), err, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _get(self, group: str, version: str, plural: str, namespace: str, name: str) -> Object | None:
        """A namespaced custom object, or None when it does not exist."""
        try:
            found: Object = await self._call(
                self.custom.get_namespaced_custom_object, group, version, namespace, plural, name
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        return found

    async def get_custom(self, plural: str, namespace: str, name: str) -> Object | None:
        """One of our objects (``trainingjobs``, ``modelservices``), or None when it does not exist."""
        return await self._get(GROUP, VERSION, plural, namespace, name)

    async def list_custom(
        self, group: str, version: str, plural: str, namespaces: tuple[str, ...], label_selector: str = ""
    ) -> list[Object]:
        """Every object of a kind (with the label selector), in ``namespaces`` (all namespaces when empty)."""
        if not namespaces:
            found: Object = await self._call(
                self.custom.list_cluster_custom_object, group, version, plural, label_selector=label_selector
            )
            return list(found.get("items") or [])
        items: list[Object] = []
        for namespace in namespaces:
            page: Object = await self._call(
                self.custom.list_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                label_selector=label_selector,
            )
            items += page.get("items") or []
        return items

    async def kuberay_resources(self) -> set[str]:
        """The ``ray.io/v1`` resources the API server serves (discovery; a read); empty without KubeRay."""
        try:
            found: Any = await self._call(self.custom.get_api_resources, RAY_GROUP, RAY_VERSION)
        except ApiError as err:
            if err.status == 404:
                return set()
            raise
        return {str(r.name) for r in (getattr(found, "resources", None) or [])}

    async def get_crd(self, name: str) -> Object | None:
        """A CustomResourceDefinition (e.g. ``rayjobs.ray.io``), or None when it does not exist."""
        try:
            found: Object = await self._call(
                self.custom.get_cluster_custom_object, "apiextensions.k8s.io", "v1", "customresourcedefinitions", name
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        return found

    async def _create_ray_object(self, plural: str, body: Object) -> tuple[Object, bool]:
        """(the object, whether this call created it): an existing one of that name is returned, not replaced."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            created: Object = await self._call(
                self.custom.create_namespaced_custom_object, RAY_GROUP, RAY_VERSION, ns, plural, body
            )
            return created, True
        except ApiError as err:
            if err.status != 409:
                raise
        existing: Object = await self._call(
            self.custom.get_namespaced_custom_object, RAY_GROUP, RAY_VERSION, ns, plural, name
        )
        return existing, False

    async def get_ray_object(self, plural: str, namespace: str, name: str) -> Object | None:
        """A KubeRay object (``rayjobs``, ``rayservices``), or None when it does not exist."""
        return await self._get(RAY_GROUP, RAY_VERSION, plural, namespace, name)

    async def get_rayjob(self, namespace: str, name: str) -> Object | None:
        return await self.get_ray_object(RAYJOBS, namespace, name)

    async def create_rayjob(self, body: Object) -> tuple[Object, bool]:
        return await self._create_ray_object(RAYJOBS, body)

    async def create_rayservice(self, body: Object) -> tuple[Object, bool]:
        return await self._create_ray_object(RAYSERVICES, body)

    async def patch_rayservice(self, namespace: str, name: str, patch: Object) -> Object:
        result: Object = await self._call(
            self.custom.patch_namespaced_custom_object, RAY_GROUP, RAY_VERSION, namespace, RAYSERVICES, name, patch
        )
        return result

    async def create_network_policy(self, body: Object) -> None:
        """Creates it; one that exists already is left alone."""
        await self._ignoring(409, self.networking.create_namespaced_network_policy, body["metadata"]["namespace"], body)

    async def list_network_policies(self, namespaces: tuple[str, ...], label_selector: str) -> list[Object]:
        """The NetworkPolicies with the label selector, in ``namespaces`` (all namespaces when empty)."""
        if not namespaces:
            found = await self._call(
                self.networking.list_network_policy_for_all_namespaces, label_selector=label_selector
            )
            return list(self.client.sanitize_for_serialization(found).get("items") or [])
        items: list[Object] = []
        for namespace in namespaces:
            page = await self._call(
                self.networking.list_namespaced_network_policy, namespace, label_selector=label_selector
            )
            items += self.client.sanitize_for_serialization(page).get("items") or []
        return items

    async def delete_network_policy(self, namespace: str, name: str) -> None:
        await self._ignoring(404, self.networking.delete_namespaced_network_policy, name, namespace)

    async def patch_network_policy(self, namespace: str, name: str, patch: Object) -> Object:
        """A JSON merge patch (RFC 7386: lists are replaced whole)."""
        result = await self._call(
            self.networking.patch_namespaced_network_policy,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )
        out: Object = self.client.sanitize_for_serialization(result)
        return out

    async def patch_rayjob(self, namespace: str, name: str, patch: Object) -> Object:
        result: Object = await self._call(
            self.custom.patch_namespaced_custom_object, RAY_GROUP, RAY_VERSION, namespace, RAYJOBS, name, patch
        )
        return result

    async def delete_rayjob(self, namespace: str, name: str) -> None:
        """Deletes with background propagation (the Ray cluster goes with it); a missing one is fine."""
        await self._ignoring(
            404,
            self.custom.delete_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAYJOBS,
            name,
            propagation_policy="Background",
        )

    async def patch_status(self, plural: str, namespace: str, name: str, status: Object) -> Object:
        """A merge patch of a TrainingJob's or ModelService's ``/status``."""
        result: Object = await self._call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": status},
        )
        return result

    async def ensure_status_access(self, objects: list[Object]) -> list[str]:
        """The job's status access (ServiceAccount unless the job names its own, Role, RoleBinding) and
        NetworkPolicy: read first, created when missing, never rewritten.

        Returns the ones that exist but belong to another owner (a deleted namesake's, not yet removed by the
        garbage collector): those must go before the job can use them.
        """
        calls = {
            "ServiceAccount": (self.core.read_namespaced_service_account, self.core.create_namespaced_service_account),
            "Role": (self.rbac.read_namespaced_role, self.rbac.create_namespaced_role),
            "RoleBinding": (self.rbac.read_namespaced_role_binding, self.rbac.create_namespaced_role_binding),
            "NetworkPolicy": (
                self.networking.read_namespaced_network_policy,
                self.networking.create_namespaced_network_policy,
            ),
        }
        foreign = []
        for body in objects:
            read, create = calls[body["kind"]]
            if not await self._ensure_owned(body, read, create, body["metadata"]["namespace"]):
                foreign.append(f"{body['kind']} {body['metadata']['name']}")
        return foreign

    async def _ensure_owned(self, body: Object, read: Callable[..., Any], create: Callable[..., Any], ns: str) -> bool:
        """Whether ``body``'s object exists (created now if missing) under ``body``'s controlling owner."""
        name, owner = body["metadata"]["name"], controller_uid(body)
        try:
            existing = self.client.sanitize_for_serialization(await self._call(read, name, ns))
        except ApiError as err:
            if err.status != 404:
                raise
            try:
                await self._call(create, ns, body)
                return True
            except ApiError as conflict:
                if conflict.status != 409:  # 409: created meanwhile (or by our own earlier try): read it
                    raise
            existing = self.client.sanitize_for_serialization(await self._call(read, name, ns))
        return owner is None or controller_uid(existing) == owner

    async def delete_status_access(self, namespace: str, name: str, *, account: bool = True) -> None:
        """Deletes the job's RoleBinding, Role and (``account``: when the job has its own) ServiceAccount; a
        ServiceAccount the user named is never touched."""
        await self._ignoring(404, self.rbac.delete_namespaced_role_binding, name, namespace)
        await self._ignoring(404, self.rbac.delete_namespaced_role, name, namespace)
        if account:
            await self._ignoring(404, self.core.delete_namespaced_service_account, name, namespace)

    async def post_event(
        self, involved: Object, type_: str, reason: str, message: str, now: datetime, component: str
    ) -> None:
        metadata = involved.get("metadata") or {}
        ns = metadata.get("namespace") or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata.get('name', 'trainserve')}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": metadata.get("name"),
                "namespace": ns,
                "uid": metadata.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        await self._call(self.core.create_namespaced_event, ns, body)

    async def _ignoring(self, status: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``fn``; an API error with ``status`` (409 exists, 404 gone) means it is done already."""
        try:
            await self._call(fn, *args, **kwargs)
        except ApiError as err:
            if err.status != status:
                raise
