"""Small typed helpers over the ``kubernetes`` client; every blocking call runs in a thread, off the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import kubernetes  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from trainserve.api.base import GROUP, VERSION
from trainserve.settings import OperatorSettings

log = logging.getLogger("trainserve.kube")

Object = dict[str, Any]
T = TypeVar("T")

RAY_GROUP, RAY_VERSION, RAYJOBS, RAYSERVICES = "ray.io", "v1", "rayjobs", "rayservices"
TRAININGJOBS, MODELSERVICES = "trainingjobs", "modelservices"


class ApiError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, status: int, reason: str, message: str = ""):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")


def _api_error(err: ApiException) -> ApiError:
    message = ""
    try:
        message = str(json.loads(err.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        message = str(err.body or "")[:200]
    return ApiError(int(err.status or 0), str(err.reason or "Error"), message)


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

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> KubeApi:
        return cls(kubernetes.client.ApiClient(client_configuration(settings)))

    def close(self) -> None:
        self.client.close()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            try:
                return fn(*args, **kwargs)
            except ApiException as err:
                raise _api_error(err) from None
            except OSError as err:  # connection refused, reset, DNS...
                raise ApiError(0, type(err).__name__, str(err)) from None

        return await asyncio.to_thread(call)

    async def kuberay_resources(self) -> set[str]:
        """The ``ray.io/v1`` resources the API server serves (discovery; a read); empty without KubeRay."""
        try:
            found: Any = await self._call(self.custom.get_api_resources, RAY_GROUP, RAY_VERSION)
        except ApiError as err:
            if err.status == 404:
                return set()
            raise
        return {str(r.name) for r in (getattr(found, "resources", None) or [])}

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

    async def patch_trainingjob_status(self, namespace: str, name: str, status: Object) -> Object:
        return await self.patch_status(TRAININGJOBS, namespace, name, status)

    async def patch_modelservice_status(self, namespace: str, name: str, status: Object) -> Object:
        return await self.patch_status(MODELSERVICES, namespace, name, status)

    async def ensure_status_access(self, account: Object, role: Object, binding: Object) -> None:
        """Creates the job's ServiceAccount, Role and RoleBinding; those that exist already are left alone."""
        ns = account["metadata"]["namespace"]
        await self._ignoring(409, self.core.create_namespaced_service_account, ns, account)
        await self._ignoring(409, self.rbac.create_namespaced_role, ns, role)
        await self._ignoring(409, self.rbac.create_namespaced_role_binding, ns, binding)

    async def delete_status_access(self, namespace: str, name: str) -> None:
        await self._ignoring(404, self.rbac.delete_namespaced_role_binding, name, namespace)
        await self._ignoring(404, self.rbac.delete_namespaced_role, name, namespace)
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
