"""plans.podhealth: what pods, RayClusters and KubeRay's Warning Events say is wrong, as conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from trainserve.api.trainingjob import TrainingJobStatus
from trainserve.plans.common import StatusDraft, condition_events
from trainserve.plans.podhealth import PODS_HEALTHY, SCHEDULED, PodHealth, apply_pod_health, pod_health

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(name: str, status: dict[str, Any], cluster: str = "digits-1-abcde", created: float = 600) -> dict[str, Any]:
    metadata = {"name": name, "labels": {"ray.io/cluster": cluster}, "creationTimestamp": stamp(created)}
    spec = {"containers": [{"name": "ray-head", "image": "registry.example/workloads:typo"}]}
    return {"metadata": metadata, "spec": spec, "status": status}


def waiting_for_node(seconds: float) -> dict[str, Any]:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/5 nodes are available: 3 Insufficient nvidia.com/gpu.",
        "lastTransitionTime": stamp(seconds),
    }
    return {"phase": "Pending", "conditions": [condition]}


def container(**state: Any) -> dict[str, Any]:
    return {"phase": "Running", "containerStatuses": [{"name": "ray-head", **state}]}


def health(*pods: dict[str, Any], clusters: list[dict[str, Any]] | None = None, events: Any = ()) -> PodHealth:
    return pod_health(list(pods), clusters or [], list(events), NOW)


def test_a_healthy_pod_has_no_problem() -> None:
    assert health(pod("p", container(state={"running": {}}))).problems == {}


def test_unschedulable_tells_the_scheduler_and_how_long_in_steps() -> None:
    fresh = health(pod("head", waiting_for_node(20)))
    problem = fresh.problems[SCHEDULED]
    assert problem.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in problem.message and "less than a minute" in problem.message
    assert fresh.requeue_after == 40  # when "more than 1m" is due
    later = health(pod("head", waiting_for_node(400)))
    assert "more than 5m" in later.problems[SCHEDULED].message and later.requeue_after == 500


def test_image_pull_names_the_image() -> None:
    found = health(pod("head", container(state={"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}})))
    problem = found.problems[PODS_HEALTHY]
    assert problem.reason == "ImagePullFailed"
    assert "registry.example/workloads:typo" in problem.message and "ray-head" in problem.message


def test_a_crash_loop_gives_the_last_lines_of_the_termination_message() -> None:
    message = "\n".join(f"line {i}" for i in range(10))
    last = {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}
    found = health(pod("head", container(state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState=last)))
    problem = found.problems[PODS_HEALTHY]
    assert problem.reason == "CrashLoopBackOff" and "exit code 1" in problem.message
    assert "line 9" in problem.message and "line 5" in problem.message and "line 4" not in problem.message


def test_oom_killed_while_waiting_to_restart_but_not_once_running_again() -> None:
    last = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    waiting = health(pod("head", container(state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState=last)))
    assert waiting.problems[PODS_HEALTHY].reason == "OOMKilled"
    assert health(pod("head", container(state={"running": {}}, lastState=last))).problems == {}


def test_a_non_zero_exit_fails_but_zero_does_not() -> None:
    failed = health(pod("head", container(state={"terminated": {"exitCode": 2, "reason": "Error"}})))
    assert failed.problems[PODS_HEALTHY].reason == "ContainerFailed"
    assert health(pod("head", container(state={"terminated": {"exitCode": 0}}))).problems == {}


def test_pods_being_deleted_do_not_count_and_more_pods_are_counted() -> None:
    going = pod("a", waiting_for_node(5))
    going["metadata"]["deletionTimestamp"] = stamp(1)
    assert health(going).problems == {}
    both = health(pod("a", waiting_for_node(5)), pod("b", waiting_for_node(5)))
    assert "pod a " in both.problems[SCHEDULED].message and "(and 1 more)" in both.problems[SCHEDULED].message


def refusal(cluster: str, seconds_ago: float) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{cluster}.1"},
        "involvedObject": {"kind": "RayCluster", "name": cluster},
        "reason": "FailedToCreateWorkerPod",
        "message": "exceeded quota: gpu-quota",
        "lastTimestamp": stamp(seconds_ago),
    }


def test_a_refused_create_lasts_until_a_pod_of_its_cluster_is_created_after_it() -> None:
    ours = [{"metadata": {"name": "digits-1-abcde"}}]
    head = pod("head", container(state={"running": {}}), created=600)
    refused = health(head, clusters=ours, events=[refusal("digits-1-abcde", 10)])
    assert refused.problems[SCHEDULED].reason == "PodCreationRefused"
    assert "exceeded quota: gpu-quota" in refused.problems[SCHEDULED].message
    worker = pod("worker", container(state={"running": {}}), created=5)
    assert health(head, worker, clusters=ours, events=[refusal("digits-1-abcde", 10)]).problems == {}
    assert health(head, clusters=ours, events=[refusal("another-cluster", 10)]).problems == {}


def test_kuberays_replica_failure_condition_is_a_refusal_too() -> None:
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreateHeadPod", "message": "forbidden"}
    clusters = [{"metadata": {"name": "c"}, "status": {"conditions": [failure]}}]
    assert health(clusters=clusters).problems[SCHEDULED].message.endswith("forbidden")


def test_conditions_appear_with_one_warning_and_clear_to_true() -> None:
    status = TrainingJobStatus()
    draft = StatusDraft(status, NOW, 1)
    apply_pod_health(draft, health(pod("p", container(state={"running": {}}))))
    assert status.conditions == [], "nothing wrong, nothing added"

    before = list(status.conditions)
    apply_pod_health(draft, health(pod("p", waiting_for_node(5))))
    events = condition_events(before, status.conditions, warning_when_false={SCHEDULED})
    assert [(e.type, e.reason) for e in events] == [("Warning", "Unschedulable")]

    before = list(status.conditions)
    apply_pod_health(draft, health(pod("p", waiting_for_node(120))))  # only the wait grew: no new Event
    assert condition_events(before, status.conditions, warning_when_false={SCHEDULED}) == []

    before = list(status.conditions)
    apply_pod_health(draft, health(pod("p", container(state={"running": {}}))))
    scheduled = next(c for c in status.conditions if c.type == SCHEDULED)
    assert scheduled.status == "True"
    events = condition_events(before, status.conditions, warning_when_false={SCHEDULED})
    assert [(e.type, e.reason) for e in events] == [("Normal", "Scheduled")]
