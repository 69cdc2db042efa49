"""Runs the real operator (Kopf + controllers + kubernetes client, peering on) against the emulated API server
through a short life of each kind, and records every API request it makes: the input of the RBAC test.

To cover a new code path, add a step to ``STEPS``: an async function that drives the emulated cluster (as a
user and as KubeRay would) until the operator has made the calls of that path.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kmock
from kmock._internal import parsing as kmock_parsing

from tests.packaging.rbac import Call, call_of, implied_by_created_roles
from tests.support.documents import changed, example
from tests.support.kubesim import (
    NAMESPACE,
    RAYJOBS,
    Cluster,
    Emulator,
    eventually,
    operator_settings,
    register,
    running_operator,
)

PEERING = "trainserve"
CLUSTER_PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
PEERINGS = "kopf.dev/v1/kopfpeerings"

#: ModelService support in the operator (the scenario drives it when present).
HAS_MODELSERVICES = importlib.util.find_spec("trainserve.handlers.modelservice") is not None

Step = Callable[[Cluster, Emulator], Awaitable[None]]


async def trainingjob_life(cluster: Cluster, emulator: Emulator) -> None:
    """Create (the first RayJob create answered 409: the operator reads the existing one), run, suspend and
    resume, succeed, TTL clean-up of the RayJob, the per-job ServiceAccount/Role/RoleBinding and the
    NetworkPolicy, delete."""
    emulator[kmock.action.CREATE, kmock.resource(RAYJOBS)][:1] << 409
    document = example("digits-trainingjob")
    document = changed(document, "spec.runPolicy", {**document["spec"]["runPolicy"], "ttlSecondsAfterFinished": 1})
    await cluster.create_trainingjob(document)
    await eventually(lambda: "digits-1" in cluster.rayjobs())
    await cluster.run_rayjob("digits-1")
    await eventually(lambda: cluster.status("digits").get("phase") == "Running")
    for suspend in (True, False):
        await cluster.patch_trainingjob("digits", {"spec": {"runPolicy": {"suspend": suspend}}})
        await eventually(lambda s=suspend: cluster.rayjobs()["digits-1"]["spec"].get("suspend") is s)  # type: ignore[misc]
        await cluster.follow_suspend("digits-1")
    await cluster.succeed_rayjob("digits-1")
    await eventually(lambda: cluster.status("digits").get("phase") == "Succeeded")
    await eventually(
        lambda: (
            not cluster.rayjobs()
            and not cluster.objects_of("v1/serviceaccounts")
            and not cluster.objects_of("networking.k8s.io/v1/networkpolicies")
        ),
        timeout=10,
    )
    await eventually(lambda: any(e["reason"] == "CleanedUp" for e in cluster.events("digits")))
    await cluster.delete_trainingjob("digits")


async def modelservice_life(cluster: Cluster, emulator: Emulator) -> None:
    """Create from a model URI (RayService and NetworkPolicy created; the first RayService create answered 409),
    KubeRay reports it ready, a spec change updates the RayService in place, a NetworkPolicy changed by hand is
    patched back, delete."""
    from tests.support.kubesim import NETWORKPOLICIES, RAYSERVICES  # present with ModelService support

    emulator[kmock.action.CREATE, kmock.resource(RAYSERVICES)][:1] << 409
    document = changed(example("digits-modelservice"), "spec.model", {"uri": "s3://models/digits/1"})
    await cluster.create_modelservice(document)
    await eventually(lambda: cluster.get(RAYSERVICES, "digits") and cluster.get(NETWORKPOLICIES, "digits-ray"))
    await cluster.rayservice_ready("digits")
    await eventually(lambda: cluster.service_condition("digits", "Ready").get("status") == "True")
    before = cluster.get(RAYSERVICES, "digits")["metadata"]["resourceVersion"]  # type: ignore[index]
    await cluster.patch_modelservice("digits", {"spec": {"replicas": 2}})
    await eventually(lambda: cluster.get(RAYSERVICES, "digits")["metadata"]["resourceVersion"] != before)  # type: ignore[index]
    wanted = cluster.get(NETWORKPOLICIES, "digits-ray")["spec"]  # type: ignore[index]
    await cluster.patch_network_policy("digits-ray", {"spec": {"ingress": [{}]}})  # everything open
    await eventually(lambda: cluster.get(NETWORKPOLICIES, "digits-ray")["spec"] == wanted)  # type: ignore[index]
    await cluster.delete_modelservice("digits")


STEPS: list[Step] = [trainingjob_life, *([modelservice_life] if HAS_MODELSERVICES else [])]


@dataclass
class Recording:
    calls: list[Call]  # every API call of the operator, plus what creating its Roles requires it to hold
    namespaced: bool


def register_peering(emulator: Emulator) -> None:
    info = kmock.ResourceInfo
    verbs = {"create", "get", "list", "watch", "patch"}
    emulator.resources[CLUSTER_PEERINGS] = info(kind="ClusterKopfPeering", namespaced=False, verbs=verbs)
    emulator.resources[PEERINGS] = info(kind="KopfPeering", namespaced=True, verbs=verbs)


@contextlib.contextmanager
def namespaces_served() -> Iterator[None]:
    """kmock 0.8 reads ``/api/v1/namespaces[/NAME]`` as a namespaced path without a resource and answers 500;
    a namespaced Kopf operator lists and watches namespaces, so read those paths as the ``namespaces`` resource."""
    original = kmock_parsing.parse_path

    def parse_path(path: str) -> kmock_parsing.ParsedPath:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            return kmock_parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None)
        return original(path)

    kmock_parsing.parse_path = parse_path
    try:
        yield
    finally:
        kmock_parsing.parse_path = original


async def record(*, namespaced: bool, steps: list[Step] | None = None) -> Recording:
    """Runs the operator (all namespaces, or only ``ml``) with mandatory peering through ``steps``."""
    with namespaces_served():
        return await _record(namespaced=namespaced, steps=steps if steps is not None else STEPS)


async def _record(*, namespaced: bool, steps: list[Step]) -> Recording:
    async with Emulator() as emulator, kmock.Server(emulator):
        register(emulator)
        register_peering(emulator)
        cluster = Cluster(emulator)
        scope: dict[str, Any] = {"all_namespaces": False, "namespaces": (NAMESPACE,)} if namespaced else {}
        settings = operator_settings(emulator, standalone=False, peering_name=PEERING, **scope)
        async with running_operator(settings):
            for step in steps:
                await step(cluster, emulator)
            await asyncio.sleep(0.5)  # the last watch echoes and Events
        peering = PEERINGS if namespaced else CLUSTER_PEERINGS
        assert any(str(res) == str(kmock.resource(peering)) for (res, _, _) in emulator.objects), "no peering object"
        calls: list[Call] = []
        for request in list(emulator._requests):
            if str(request.headers.get("User-Agent", "")).startswith("kmock/"):
                continue  # the test's own requests
            method, url = str(request.method.value).upper(), request.url
            call = call_of(method, url.path, dict(url.query), request.data)
            if call is not None:
                calls.append(call)
            calls.extend(implied_by_created_roles(method, url.path, request.data))
        return Recording(calls=calls, namespaced=namespaced)
