"""Who reaches which port of the Ray clusters we create, evaluated on the NetworkPolicies the operator writes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from tests.support.documents import all_examples, changed, example
from tests.support.netpol import Cluster, Pod
from trainserve.api.modelservice import ModelService
from trainserve.api.serving import ModelTarget, serve_args
from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.networkpolicy import build_network_policy
from trainserve.builders.rayjob import build_rayjob
from trainserve.builders.raypod import CLIENT_PORT, DASHBOARD_AGENT_PORT, DASHBOARD_PORT, GCS_PORT, METRICS_PORT
from trainserve.builders.rayservice import build_rayservice
from trainserve.settings import OperatorSettings

NS = "ml"
SETTINGS = OperatorSettings(operator_namespace="trainserve-system")
NAMESPACES = {NS: {}, "kuberay-system": {}, "trainserve-system": {}, "monitoring": {}, "tenant": {"team": "web"}}
#: Ray's default object manager and node manager ports, and one of its worker ports.
RAY_INTERNAL = (GCS_PORT, CLIENT_PORT, DASHBOARD_AGENT_PORT, 8076, 8077, 10002)
SERVE_PORT = 8000
GRPC_PORT = 9000

OTHER_NAMESPACE = Pod("tenant", {"app": "anything"})
KUBERAY = Pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})
OPERATOR = Pod("trainserve-system", {"app.kubernetes.io/name": "trainserve"})
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
NEIGHBOUR = Pod(NS, {"app": "notebook"})  # same namespace, not part of the cluster
OUTSIDE = Pod(None, ip="198.51.100.7")


def trainingjob(document: dict[str, Any]) -> TrainingJob:
    job = TrainingJob.model_validate(document)
    job.metadata.namespace = NS
    return job


def modelservice(document: dict[str, Any]) -> ModelService:
    service = ModelService.model_validate(document)
    service.metadata.namespace = NS
    return service


def ray_pods(obj: dict[str, Any]) -> list[Pod]:
    """The Ray pods KubeRay makes of a RayJob or RayService (our template labels, KubeRay adds its own), and the
    RayJob's submitter."""
    cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    if "submitterPodTemplate" in obj["spec"]:
        templates.append(obj["spec"]["submitterPodTemplate"])
    pods = []
    for template in templates:
        labels = {**template["metadata"]["labels"], "ray.io/cluster": "c-x7k2p"}
        ports = {p["name"]: (p["containerPort"], "TCP") for p in template["spec"]["containers"][0].get("ports", [])}
        pods.append(Pod(NS, labels, ports=ports))
    return pods


def cluster_of(policy: dict[str, Any], *more: dict[str, Any]) -> Cluster:
    return Cluster(NAMESPACES, [policy, *more])


JOB = trainingjob(example("digits-trainingjob"))
SERVICE = modelservice(example("digits-modelservice"))
RAYJOB = build_rayjob(JOB, SETTINGS)
RAYSERVICE = build_rayservice(SERVICE, serve_args(SERVICE, ModelTarget(uri="s3://m/1"), None), SETTINGS)
CASES = [
    ("TrainingJob", build_network_policy(JOB, SETTINGS), RAYJOB),
    ("ModelService", build_network_policy(SERVICE, SETTINGS), RAYSERVICE),
]


@pytest.mark.parametrize(("kind", "policy", "ray_object"), CASES, ids=[c[0] for c in CASES])
def test_another_namespace_reaches_neither_dashboard_nor_client_nor_gcs(
    kind: str, policy: dict[str, Any], ray_object: dict[str, Any]
) -> None:
    net = cluster_of(policy)
    for target in ray_pods(ray_object):
        for source in (OTHER_NAMESPACE, NEIGHBOUR, OUTSIDE, PROMETHEUS):
            for port in (DASHBOARD_PORT, *RAY_INTERNAL):
                assert not net.allowed(source, target, port), (source, port)
        assert not net.allowed(KUBERAY, target, GCS_PORT) and not net.allowed(KUBERAY, target, CLIENT_PORT)


@pytest.mark.parametrize(("kind", "policy", "ray_object"), CASES, ids=[c[0] for c in CASES])
def test_kuberay_and_the_operator_reach_the_dashboard(
    kind: str, policy: dict[str, Any], ray_object: dict[str, Any]
) -> None:
    net = cluster_of(policy)
    head = ray_pods(ray_object)[0]
    assert net.allowed(KUBERAY, head, DASHBOARD_PORT) and net.allowed(OPERATOR, head, DASHBOARD_PORT)


@pytest.mark.parametrize(("kind", "policy", "ray_object"), CASES, ids=[c[0] for c in CASES])
def test_the_clusters_own_pods_reach_every_port(kind: str, policy: dict[str, Any], ray_object: dict[str, Any]) -> None:
    net = cluster_of(policy)
    pods = ray_pods(ray_object)
    for source in pods:
        for target in pods:
            for port in (DASHBOARD_PORT, *RAY_INTERNAL):
                assert net.allowed(source, target, port)


@pytest.mark.parametrize(("kind", "policy", "ray_object"), CASES, ids=[c[0] for c in CASES])
def test_metrics_only_from_the_prometheus_namespace(
    kind: str, policy: dict[str, Any], ray_object: dict[str, Any]
) -> None:
    net = cluster_of(policy)
    for target in ray_pods(ray_object)[:2]:
        assert net.allowed(PROMETHEUS, target, METRICS_PORT)
        assert not net.allowed(OTHER_NAMESPACE, target, METRICS_PORT)
    anywhere = cluster_of(build_network_policy(SERVICE, SETTINGS.model_copy(update={"prometheus_namespace": "*"})))
    assert anywhere.allowed(OTHER_NAMESPACE, ray_pods(RAYSERVICE)[1], METRICS_PORT)


def test_a_training_jobs_submitter_reaches_the_dashboard_and_another_jobs_pods_reach_nothing() -> None:
    net = cluster_of(build_network_policy(JOB, SETTINGS))
    head, *_, submitter = ray_pods(RAYJOB)
    assert net.allowed(submitter, head, DASHBOARD_PORT)
    other_job = trainingjob({**example("digits-trainingjob"), "metadata": {"name": "other"}})
    for intruder in ray_pods(build_rayjob(other_job, SETTINGS)):
        assert not net.allowed(intruder, head, GCS_PORT) and not net.allowed(intruder, head, DASHBOARD_PORT)


def test_anyone_reaches_the_serve_port_of_a_modelservice_but_not_of_a_trainingjob() -> None:
    serving = cluster_of(build_network_policy(SERVICE, SETTINGS))
    for target in ray_pods(RAYSERVICE):
        for source in (OTHER_NAMESPACE, NEIGHBOUR, OUTSIDE, KUBERAY):
            assert serving.allowed(source, target, SERVE_PORT)
    training = cluster_of(build_network_policy(JOB, SETTINGS))
    assert not training.allowed(OTHER_NAMESPACE, ray_pods(RAYJOB)[0], SERVE_PORT)


def test_the_grpc_port_is_open_like_the_serve_port_and_closed_when_grpc_is_off() -> None:
    worker = ray_pods(RAYSERVICE)[1]
    assert cluster_of(build_network_policy(SERVICE, SETTINGS)).allowed(OUTSIDE, worker, GRPC_PORT)
    selected = SETTINGS.model_copy(update={"serve_from_pod_labels": {"app": "frontend"}})
    net = cluster_of(build_network_policy(SERVICE, selected))
    assert net.allowed(Pod(NS, {"app": "frontend"}), worker, GRPC_PORT) and not net.allowed(
        NEIGHBOUR, worker, GRPC_PORT
    )
    moved = modelservice(changed(example("digits-modelservice"), "spec.grpc.port", 9100))
    assert cluster_of(build_network_policy(moved, SETTINGS)).allowed(OUTSIDE, worker, 9100)
    assert not cluster_of(build_network_policy(moved, SETTINGS)).allowed(OUTSIDE, worker, GRPC_PORT)
    off = modelservice(changed(example("digits-modelservice"), "spec.grpc.enabled", False))
    assert not cluster_of(build_network_policy(off, SETTINGS)).allowed(OUTSIDE, worker, GRPC_PORT)


def test_the_serve_port_from_a_configured_selector_and_the_operator() -> None:
    settings = SETTINGS.model_copy(
        update={"serve_from_namespace_labels": {"team": "web"}, "serve_from_pod_labels": {"app": "frontend"}}
    )
    net = cluster_of(build_network_policy(SERVICE, settings))
    worker = ray_pods(RAYSERVICE)[1]
    assert net.allowed(Pod("tenant", {"app": "frontend"}), worker, SERVE_PORT)
    assert not net.allowed(Pod("tenant", {"app": "batch"}), worker, SERVE_PORT)
    assert not net.allowed(Pod(NS, {"app": "frontend"}), worker, SERVE_PORT)  # namespace without the label
    assert not net.allowed(OUTSIDE, worker, SERVE_PORT)
    assert net.allowed(OPERATOR, worker, SERVE_PORT)  # canary figures
    pods_only = cluster_of(
        build_network_policy(SERVICE, SETTINGS.model_copy(update={"serve_from_pod_labels": {"app": "frontend"}}))
    )
    assert pods_only.allowed(Pod(NS, {"app": "frontend"}), worker, SERVE_PORT)
    assert not pods_only.allowed(NEIGHBOUR, worker, SERVE_PORT)


EVERY = [
    (name, build_network_policy((trainingjob if doc["kind"] == "TrainingJob" else modelservice)(doc), settings))
    for name, doc in all_examples()
    for settings in (
        SETTINGS,
        SETTINGS.model_copy(update={"serve_from_pod_labels": {"a": "b"}, "prometheus_namespace": "*"}),
    )
]


@pytest.mark.parametrize(("name", "policy"), EVERY, ids=[f"{n}-{i % 2}" for i, (n, _) in enumerate(EVERY)])
def test_every_policy_is_valid_for_kubernetes(name: str, policy: dict[str, Any]) -> None:
    kubernetes_validate.validate(policy, latest_version(), strict=True)
    assert policy["metadata"]["name"].endswith("-ray")


def test_a_job_and_the_service_of_the_same_name_get_policies_of_their_own() -> None:
    assert JOB.metadata.name == SERVICE.metadata.name == "digits"
    names = {build_network_policy(owner, SETTINGS)["metadata"]["name"] for owner in (JOB, SERVICE)}
    assert names == {"digits-training-ray", "digits-ray"}
