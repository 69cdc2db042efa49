"""Security of what the operator writes, with the real operator on the emulated API server: no secret value in
plain sight, Ray token authentication on (or clearly refused on a KubeRay without it), and a NetworkPolicy for
every Ray cluster."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import kmock
import pytest

from tests.support.documents import all_examples, changed
from tests.support.kubesim import (
    NAMESPACE,
    NETWORKPOLICIES,
    RAYSERVICES,
    Cluster,
    Emulator,
    eventually,
    kuberay_crds,
    operator_settings,
    running_operator,
)
from tests.support.schemas import kuberay_schema, schema_errors

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

SECRETS = "v1/secrets"
#: Secret values no object, status, Event, annotation, request or log line of the operator may show.
STORAGE = {"AWS_ACCESS_KEY_ID": "AKIAK3YS3CR3TV4LU3X1", "AWS_SECRET_ACCESS_KEY": "s3cr3t/v4lue+Of-The-Bucket-0042"}
BEARER = "bearer-t0ken-that-must-never-show-7f3a"
RAY_TOKEN = "r4y-cluster-t0ken-made-by-kuberay-91c2"
VALUES = [*STORAGE.values(), BEARER, RAY_TOKEN]
#: Where the canary figures are read: nothing listens there (refused at once, no DNS lookup).
NO_STATS = "http://127.0.0.1:9/{service}/{namespace}"


def forms(value: str) -> list[str]:
    """A value as it could leak: itself, and base64 (a Secret's ``data``)."""
    return [value, base64.b64encode(value.encode()).decode()]


def with_secrets(document: dict[str, Any]) -> dict[str, Any]:
    """An example with every secret reference set (models given by URI, so no TrainingJob must finish first)."""
    document = changed(document, "spec.storageSecretRef", {"name": "bucket-credentials"})
    if document["kind"] == "ModelService":
        document = changed(document, "spec.model", {"uri": "s3://ml-models/models/digits/3"})
        if "canary" in document["spec"]:
            document = changed(document, "spec.canary.model", {"uri": "s3://ml-models/models/digits/4"})
        document = changed(document, "spec.auth", {"tokenSecretRef": {"name": "inference-token", "key": "token"}})
    return document


async def create_secret(cluster: Cluster, name: str, data: dict[str, str]) -> None:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "data": encoded}
    await cluster._send("POST", cluster._path(SECRETS), body)


def register_secrets(emulator: Emulator) -> None:
    verbs = {"create", "get", "list", "watch", "patch", "delete"}
    emulator.resources[SECRETS] = kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=verbs)


def written_by_the_operator(emulator: Emulator) -> list[str]:
    """Every request the operator made (not the test), with its body."""
    return [
        f"{r.method} {r.url} {json.dumps(r.data, sort_keys=True)}"
        for r in list(emulator._requests)
        if not str(r.headers.get("User-Agent", "")).startswith("kmock/")
    ]


def stored_objects(emulator: Emulator) -> list[str]:
    """Every object in the API except the Secrets themselves."""
    return [
        json.dumps(obj.raw, sort_keys=True)
        for (resource, _, _), obj in list(emulator.objects.items())
        if str(resource) != str(kmock.resource(SECRETS))
    ]


async def test_no_secret_value_is_in_any_object_event_request_or_log_line(
    emulator: Emulator, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    register_secrets(emulator)
    await create_secret(cluster, "bucket-credentials", STORAGE)
    await create_secret(cluster, "inference-token", {"token": BEARER})
    documents = [with_secrets(doc) for _, doc in all_examples()]
    async with running_operator(operator_settings(emulator, serve_stats_url=NO_STATS)):
        for document in documents:
            create = cluster.create_trainingjob if document["kind"] == "TrainingJob" else cluster.create_modelservice
            await create(document)
        jobs = [d["metadata"]["name"] for d in documents if d["kind"] == "TrainingJob"]
        services = [d["metadata"]["name"] for d in documents if d["kind"] == "ModelService"]
        for job in jobs:
            await eventually(lambda j=job: f"{j}-1" in cluster.rayjobs())  # type: ignore[misc]
            await create_secret(cluster, f"{job}-1-x7k2p", {"auth_token": RAY_TOKEN})  # as KubeRay makes it
            await cluster.run_rayjob(f"{job}-1")
            await eventually(lambda j=job: cluster.status(j).get("phase") == "Running")  # type: ignore[misc]
        for service in services:
            await eventually(lambda s=service: cluster.get(RAYSERVICES, s))  # type: ignore[misc]
            await cluster.rayservice_ready(service)
            await eventually(lambda s=service: cluster.service_condition(s, "Ready").get("status") == "True")  # type: ignore[misc]
        await cluster.fail_rayjob(f"{jobs[0]}-1", message="the job exited with 1")  # an error path logs, too
        await eventually(lambda: cluster.status(jobs[0]).get("attempts") == 2)

    places = {
        "request": written_by_the_operator(emulator),
        "object": stored_objects(emulator),
        "log": [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records],
    }
    assert len(places["log"]) > 10 and any("Event" in text for text in places["object"])
    for where, texts in places.items():
        for text in texts:
            for value in VALUES:
                for form in forms(value):
                    assert form not in text, f"a secret value in a {where}: {text[:300]}"
    secret_calls = [r for r in places["request"] if "/secrets" in r]
    assert secret_calls == [], "the operator reads no Secret: it refers to them by name"
    for service in services:  # the bearer token reaches the pods by reference only
        rayservice = cluster.get(RAYSERVICES, service)
        assert rayservice is not None
        env = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        token = next(e for e in env if e["name"] == "TRAINSERVE_AUTH_TOKEN")
        assert token == {
            "name": "TRAINSERVE_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "inference-token", "key": "token"}},
        }


async def test_every_ray_cluster_gets_token_authentication_and_a_network_policy(
    emulator: Emulator, cluster: Cluster
) -> None:
    documents = [doc for _, doc in all_examples()]
    async with running_operator(operator_settings(emulator, serve_stats_url=NO_STATS)):
        for document in map(with_secrets, documents):
            create = cluster.create_trainingjob if document["kind"] == "TrainingJob" else cluster.create_modelservice
            await create(document)
        for document in documents:
            name = document["metadata"]["name"]
            if document["kind"] == "TrainingJob":
                rayjob = await eventually(lambda n=name: cluster.rayjobs().get(f"{n}-1"))  # type: ignore[misc]
                assert schema_errors(rayjob, kuberay_schema("RayJob")) == []
                assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
            else:
                rayservice = await eventually(lambda n=name: cluster.get(RAYSERVICES, n))  # type: ignore[misc]
                assert schema_errors(rayservice, kuberay_schema("RayService")) == []
                assert rayservice["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
            policy_name = f"{name}-ray" if document["kind"] == "ModelService" else f"{name}-training-ray"
            policy = await eventually(lambda p=policy_name: cluster.get(NETWORKPOLICIES, p))  # type: ignore[misc]
            owner = policy["metadata"]["ownerReferences"][0]
            assert owner["kind"] == document["kind"] and owner["name"] == name and owner["controller"] is True


def install_old_kuberay(emulator: Emulator) -> None:
    """KubeRay's CRDs as a KubeRay older than v1.5.1 installs them: no ``authOptions``."""
    for crd in kuberay_crds(auth_options=False):
        emulator.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, crd["metadata"]["name"]] = crd


async def test_a_kuberay_without_auth_options_gets_no_cluster_and_a_condition_that_says_why(
    emulator: Emulator, cluster: Cluster
) -> None:
    install_old_kuberay(emulator)
    examples = dict(all_examples())
    job, service = (with_secrets(examples[f"digits-{kind}.yaml"]) for kind in ("trainingjob", "modelservice"))
    async with running_operator(operator_settings(emulator, serve_stats_url=NO_STATS)):
        await cluster.create_trainingjob(job)
        await cluster.create_modelservice(service)
        created = await eventually(lambda: cluster.condition("digits", "Created").get("reason") == "RayAuthUnsupported")
        assert created
        ready = await eventually(
            lambda: cluster.service_condition("digits", "Ready").get("reason") == "RayAuthUnsupported"
        )
        assert ready
        for message in (
            cluster.condition("digits", "Created")["message"],
            cluster.service_condition("digits", "Ready")["message"],
        ):
            assert "authOptions" in message and "v1.5.1" in message and "rayAuth: false" in message
        assert not cluster.rayjobs() and cluster.get(RAYSERVICES, "digits") is None
        assert "RayAuthUnsupported" in [e["reason"] for e in cluster.events("digits")]


async def test_opting_out_runs_clusters_without_authentication(emulator: Emulator, cluster: Cluster) -> None:
    install_old_kuberay(emulator)
    job = next(with_secrets(doc) for name, doc in all_examples() if name == "digits-trainingjob.yaml")
    async with running_operator(operator_settings(emulator, ray_auth=False)):
        await cluster.create_trainingjob(job)
        rayjob = await eventually(lambda: cluster.rayjobs().get("digits-1"))
        assert "authOptions" not in rayjob["spec"]["rayClusterSpec"]
        assert cluster.get(NETWORKPOLICIES, "digits-training-ray") is not None  # the network stays locked down
