"""Serving from MLflow's model registry: `models:/NAME@ALIAS` and `models:/NAME/VERSION` resolved by the real
operator through a real MLflow tracking server, and an alias moved in MLflow rolling the service in place."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.support.documents import changed, example
from tests.support.kubesim import RAYSERVICES, Cluster, Emulator, eventually, operator_settings, running_operator
from tests.support.schemas import kuberay_schema, schema_errors
from trainserve.registry import RegistryError, lookup

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


def registered_model(server: str, versions: int, alias: str | None = None) -> str:
    """A fresh registered model whose version N lives at ``s3://models/NAME/N``; ``alias`` names version 1."""
    client = MlflowClient(tracking_uri=server)
    name = f"digits-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for number in range(1, versions + 1):
        client.create_model_version(name, f"s3://models/{name}/{number}")
    if alias is not None:
        client.set_registered_model_alias(name, alias, "1")
    return name


def from_registry(uri: str, server: str, **registry: Any) -> dict[str, Any]:
    model = {"uri": uri, "registry": {"trackingUri": server, **registry}}
    return changed(example("digits-modelservice"), "spec.model", model)


def served_uri(cluster: Cluster) -> str | None:
    primary = cluster.served("digits").get("user_config", {}).get("primary") or {}
    return primary.get("uri")


async def test_lookup_answers_versions_and_aliases_as_the_registry_holds_them(mlflow_server: str) -> None:
    name = registered_model(mlflow_server, versions=2, alias="champion")
    found = lookup(mlflow_server, f"models:/{name}@champion")
    assert (found.version, found.source) == (1, f"s3://models/{name}/1")
    assert lookup(mlflow_server, f"models:/{name}/2").source == f"s3://models/{name}/2"
    with pytest.raises(RegistryError) as missing:
        lookup(mlflow_server, f"models:/{name}@nobody")
    assert missing.value.reason == "RegisteredModelNotFound" and "nobody" in missing.value.message
    with pytest.raises(RegistryError) as down:
        lookup("http://127.0.0.1:9", f"models:/{name}@champion", timeout=2)
    assert down.value.reason == "RegistryUnavailable"


async def test_moving_the_alias_rolls_the_service_in_place(
    emulator: Emulator, cluster: Cluster, mlflow_server: str
) -> None:
    name = registered_model(mlflow_server, versions=2, alias="champion")
    document = from_registry(
        f"models:/{name}@champion", mlflow_server, resolveIntervalSeconds=5, credentialsSecretRef={"name": "mlflow"}
    )
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(document)
        await eventually(lambda: served_uri(cluster) == f"s3://models/{name}/1", timeout=20)
        rayservice = cluster.get(RAYSERVICES, "digits")
        assert schema_errors(rayservice, kuberay_schema("RayService")) == []
        application = cluster.serve_config("digits")["applications"][0]
        assert application["runtime_env"]["env_vars"]["MLFLOW_TRACKING_URI"] == mlflow_server
        head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": "mlflow"}} in head["envFrom"], "the replicas download with these credentials"
        await cluster.rayservice_ready("digits")
        await eventually(lambda: cluster.service_status("digits").get("model", {}).get("version") == 1)
        assert cluster.service_status("digits")["model"] == {
            "uri": f"s3://models/{name}/1",
            "version": 1,
            "registered": f"models:/{name}@champion",
        }

        MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(name, "champion", "2")
        await eventually(lambda: served_uri(cluster) == f"s3://models/{name}/2", timeout=20)
        assert cluster.get(RAYSERVICES, "digits")["metadata"]["uid"] == rayservice["metadata"]["uid"], "in place"
        await cluster.rayservice_ready("digits")
        await eventually(lambda: cluster.service_status("digits").get("model", {}).get("version") == 2)


async def test_a_missing_alias_says_so_and_serves_once_it_is_set(
    emulator: Emulator, cluster: Cluster, mlflow_server: str
) -> None:
    name = registered_model(mlflow_server, versions=1)
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(from_registry(f"models:/{name}@champion", mlflow_server))
        await eventually(
            lambda: cluster.service_condition("digits", "ModelLoaded").get("reason") == "RegisteredModelNotFound"
        )
        assert "champion" in cluster.service_condition("digits", "Ready")["message"]
        assert cluster.get(RAYSERVICES, "digits") is None
        # A failed lookup is asked again sooner than the resolve interval.
        MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(name, "champion", "1")
        await eventually(lambda: served_uri(cluster) == f"s3://models/{name}/1", timeout=30)
