"""The RayService the operator creates: valid for KubeRay's v1 CRD, Ray Serve's config schema
and Kubernetes, and what the ModelService asked for."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from ray.serve.schema import ServeDeploySchema

from tests.support.documents import all_examples, changed, example
from tests.support.schemas import kuberay_schema, schema_errors
from trainserve.api.modelservice import ModelService
from trainserve.api.serving import AUTH_TOKEN_ENV, ModelTarget, serve_args
from trainserve.builders.rayservice import build_rayservice, worker_shape
from trainserve.settings import OperatorSettings

SETTINGS = OperatorSettings(image="example.com/workloads:1")
MODEL = ModelTarget(uri="s3://models/digits/3", version=3)
CANARY = ModelTarget(uri="s3://models/digits/4", version=4)


def service(document: dict[str, Any]) -> ModelService:
    parsed = ModelService.model_validate(document)
    parsed.metadata.namespace = "ml"
    parsed.metadata.uid = "uid-9"
    return parsed


def rayservice_of(document: dict[str, Any], canary: ModelTarget | None = None, **settings: Any) -> dict[str, Any]:
    svc = service(document)
    args = serve_args(svc, MODEL, canary if svc.spec.canary else None)
    return build_rayservice(svc, args, OperatorSettings(image="example.com/workloads:1", **settings), "creds")


def pods(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


def serve_config(rayservice: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    return loaded


SERVICES = [(name, doc) for name, doc in all_examples() if doc["kind"] == "ModelService"]


@pytest.mark.parametrize(("name", "document"), SERVICES, ids=[n for n, _ in SERVICES])
def test_rayservice_validates_against_kuberay_serve_and_kubernetes(name: str, document: dict[str, Any]) -> None:
    rayservice = rayservice_of(document, CANARY)
    assert schema_errors(rayservice, kuberay_schema("RayService")) == []
    ServeDeploySchema.model_validate(serve_config(rayservice))
    for template in pods(rayservice):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template["metadata"]}, **template}
        kubernetes_validate.validate(pod, latest_version(), strict=True)


def test_grpc_is_on_by_default_on_every_serving_pod_and_can_be_moved_or_turned_off() -> None:
    document = example("digits-modelservice")
    rayservice = rayservice_of(document)
    assert serve_config(rayservice)["grpc_options"] == {
        "port": 9000,
        "grpc_servicer_functions": ["trainserve_workloads.serve.grpc_stubs.add_GRPCInferenceServiceServicer_to_server"],
    }
    for template in pods(rayservice):
        assert {"name": "grpc", "containerPort": 9000} in template["spec"]["containers"][0]["ports"]
    moved = rayservice_of(changed(document, "spec.grpc", {"port": 9100}))
    assert serve_config(moved)["grpc_options"]["port"] == 9100
    assert schema_errors(moved, kuberay_schema("RayService")) == []
    off = rayservice_of(changed(document, "spec.grpc", {"enabled": False}))
    assert "grpc_options" not in serve_config(off)
    assert all(p["name"] != "grpc" for t in pods(off) for p in t["spec"]["containers"][0]["ports"])


@pytest.mark.parametrize("port", [8000, 8080, 6379, 8265, 80, 10002])
def test_a_grpc_port_ray_uses_or_outside_the_range_is_refused(port: int) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="port"):
        service(changed(example("digits-modelservice"), "spec.grpc.port", port))


def test_serve_config_carries_models_split_scaling_and_resources() -> None:
    rayservice = rayservice_of(example("digits-gpu-modelservice"), CANARY)
    app = serve_config(rayservice)["applications"][0]
    assert app["import_path"] == "trainserve_workloads.serve:app"
    server = next(d for d in app["deployments"] if d["name"] == "ModelServer")
    assert server["autoscaling_config"]["min_replicas"] == 2 and server["autoscaling_config"]["max_replicas"] == 8
    assert server["autoscaling_config"]["target_ongoing_requests"] == 32
    assert server["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 1.0, "memory": 8 * 2**30}
    assert server["max_ongoing_requests"] >= 64  # room for full batches
    assert server["logging_config"] == {"enable_access_log": False, "log_level": "WARNING"}  # no per-request record
    config = server["user_config"]
    assert config["primary"]["uri"] == MODEL.uri
    assert config["canary"] == {"uri": CANARY.uri, "version": 4, "trafficPercent": 10}
    assert config["authTokenEnv"] == AUTH_TOKEN_ENV
    assert config["runtime"] == "auto"  # applied in place, like the models


def test_runtime_tensorflow_reaches_the_replicas_config() -> None:
    document = example("digits-gpu-modelservice")
    document["spec"]["runtime"] = "tensorflow"
    deployments = serve_config(rayservice_of(document, CANARY))["applications"][0]["deployments"]
    server = next(d for d in deployments if d["name"] == "ModelServer")
    assert server["user_config"]["runtime"] == "tensorflow"


def test_gpu_workers_scale_between_replica_bounds_with_the_token_from_the_secret() -> None:
    rayservice = rayservice_of(example("digits-gpu-modelservice"), CANARY)
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    group = cluster["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (2, 2, 8)
    assert group["rayStartParams"]["num-gpus"] == "1"
    spec = group["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    token = next(e for e in container["env"] if e["name"] == AUTH_TOKEN_ENV)
    assert token["valueFrom"]["secretKeyRef"] == {"name": "digits-inference-token", "key": "token"}
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert {"name": "metrics", "containerPort": 8080} in container["ports"]


def test_fractional_replicas_share_worker_pods() -> None:
    document = changed(example("digits-modelservice"), "spec.replicas", 3)
    svc = service(document)
    shape = worker_shape(serve_args(svc, MODEL, None))
    assert shape.replicas_per_pod == 2 and shape.cpus == 1  # 0.5 CPU each
    assert (shape.min_pods, shape.max_pods) == (2, 2)


def test_fast_ingress_is_on_by_default_and_can_be_turned_off() -> None:
    fast = rayservice_of(example("digits-modelservice"))
    env = {e["name"]: e.get("value") for e in pods(fast)[0]["spec"]["containers"][0]["env"]}
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"].startswith("trainserve_workloads.serve.")
    classic = rayservice_of(example("digits-modelservice"), fast_ingress=False)
    env = {e["name"] for e in pods(classic)[0]["spec"]["containers"][0]["env"]}
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in env


def test_children_are_owned_labelled_and_restricted() -> None:
    rayservice = rayservice_of(example("digits-modelservice"))
    metadata = rayservice["metadata"]
    assert metadata["ownerReferences"][0]["uid"] == "uid-9" and metadata["ownerReferences"][0]["kind"] == "ModelService"
    assert metadata["labels"]["trainserve.io/modelservice"] == "digits"
    for template in pods(rayservice):
        assert template["metadata"]["labels"]["trainserve.io/modelservice"] == "digits"
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["spec"]["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_ray_token_authentication_is_on_unless_the_settings_opt_out() -> None:
    assert rayservice_of(example("digits-modelservice"))["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    assert (
        "authOptions" not in rayservice_of(example("digits-modelservice"), ray_auth=False)["spec"]["rayClusterConfig"]
    )


def test_runtime_env_reaches_the_serve_application() -> None:
    runtime_env = {"pip": ["tensorflow-text==2.21.0"], "envVars": {"TF_NUM_INTRAOP_THREADS": "2"}}
    document = changed(example("digits-modelservice"), "spec.runtimeEnv", runtime_env)
    config = serve_config(rayservice_of(document))
    ServeDeploySchema.model_validate(config)
    assert config["applications"][0]["runtime_env"] == {
        "pip": ["tensorflow-text==2.21.0"],
        "env_vars": {"TF_NUM_INTRAOP_THREADS": "2"},
    }
    assert "runtime_env" not in serve_config(rayservice_of(example("digits-modelservice")))["applications"][0]


def test_upgrade_strategy_queue_and_priority_reach_the_rayservice() -> None:
    document = changed(example("digits-gpu-modelservice"), "metadata.labels", {"kueue.x-k8s.io/queue-name": "serving"})
    document = changed(document, "spec.podTemplate", {"spec": {"priorityClassName": "online-serving"}})
    rayservice = rayservice_of(document, CANARY)
    assert schema_errors(rayservice, kuberay_schema("RayService")) == []
    assert rayservice["spec"]["upgradeStrategy"] == {
        "type": "NewClusterWithIncrementalUpgrade",
        "clusterUpgradeOptions": {
            "gatewayClassName": "istio",
            "stepSizePercent": 25,
            "intervalSeconds": 60,
            "maxSurgePercent": 25,
        },
    }  # progressDeadlineSeconds is the operator's: KubeRay's CRD would prune it
    assert rayservice["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "serving"
    assert [pod["spec"]["priorityClassName"] for pod in pods(rayservice)] == ["online-serving", "online-serving"]


@pytest.mark.parametrize("kind", ["NewCluster", "None"])
def test_the_other_strategies_pass_their_type_alone(kind: str) -> None:
    document = changed(example("digits-modelservice"), "spec.upgradeStrategy", {"type": kind})
    rayservice = rayservice_of(document)
    assert rayservice["spec"]["upgradeStrategy"] == {"type": kind}
    assert schema_errors(rayservice, kuberay_schema("RayService")) == []


def test_without_a_strategy_or_queue_the_rayservice_leaves_them_to_kuberay() -> None:
    rayservice = rayservice_of(example("digits-modelservice"))
    assert "upgradeStrategy" not in rayservice["spec"]
    assert "kueue.x-k8s.io/queue-name" not in rayservice["metadata"]["labels"]
