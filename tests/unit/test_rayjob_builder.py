"""The RayJob the operator creates: valid for KubeRay's v1 CRD and Kubernetes, and what a user asked for."""

from __future__ import annotations

import json
import shlex
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.support.documents import all_examples, changed, example
from tests.support.schemas import kuberay_schema, schema_errors
from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.rayjob import build_rayjob
from trainserve.builders.rbac import build_status_access
from trainserve.settings import OperatorSettings

SETTINGS = OperatorSettings(image="example.com/workloads:1")


def job(document: dict[str, Any], uid: str | None = "uid-1") -> TrainingJob:
    parsed = TrainingJob.model_validate(document)
    parsed.metadata.namespace = "ml"
    parsed.metadata.uid = uid
    return parsed


def templates(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


def worker(rayjob: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    return group


TRAININGJOBS = [(name, doc) for name, doc in all_examples() if doc["kind"] == "TrainingJob"]


@pytest.mark.parametrize(("name", "document"), TRAININGJOBS, ids=[n for n, _ in TRAININGJOBS])
def test_rayjob_validates_against_kuberay_and_kubernetes(name: str, document: dict[str, Any]) -> None:
    rayjob = build_rayjob(job(document), SETTINGS, attempt=2)
    assert schema_errors(rayjob, kuberay_schema("RayJob")) == []
    for template in [*templates(rayjob), rayjob["spec"]["submitterPodTemplate"]]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template["metadata"]}, **template}
        kubernetes_validate.validate(pod, latest_version(), strict=True)
    for obj in build_status_access(job(document)):
        kubernetes_validate.validate(obj, latest_version(), strict=True)


def test_workers_resources_and_placement() -> None:
    rayjob = build_rayjob(job(example("digits-gpu-trainingjob")), SETTINGS)
    group = worker(rayjob)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 4
    assert group["rayStartParams"]["num-gpus"] == "1"
    spec = group["template"]["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in spec["volumes"]
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert rayjob["spec"]["activeDeadlineSeconds"] == 7200 and rayjob["spec"]["shutdownAfterJobFinishes"] is True


def test_cpu_jobs_get_no_gpu_toleration_and_fractional_cpus() -> None:
    document = changed(example("digits-trainingjob"), "spec.resources", {"workers": 2, "cpusPerWorker": 0.5})
    spec = worker(build_rayjob(job(document), SETTINGS))["template"]["spec"]
    assert "tolerations" not in spec
    assert spec["containers"][0]["resources"]["limits"]["cpu"] == "500m"


def test_pods_are_locked_down_and_secrets_are_referenced_not_inlined() -> None:
    rayjob = build_rayjob(job(example("digits-gpu-trainingjob")), SETTINGS)
    for template in templates(rayjob):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        # The MLflow credentials Secret's keys too (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN), by reference.
        assert container["envFrom"] == [
            {"secretRef": {"name": "ml-models-s3"}},
            {"secretRef": {"name": "mlflow-credentials"}},
        ]
    head, workers = templates(rayjob)
    assert head["spec"]["serviceAccountName"] == "digits-gpu-trainserve-status"
    assert workers["spec"]["automountServiceAccountToken"] is False


def test_ray_token_authentication_is_on_unless_the_settings_opt_out() -> None:
    rayjob = build_rayjob(job(example("digits-trainingjob")), SETTINGS)
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    opted_out = build_rayjob(job(example("digits-trainingjob")), SETTINGS.model_copy(update={"ray_auth": False}))
    assert "authOptions" not in opted_out["spec"]["rayClusterSpec"]


def test_kuberays_submitter_carries_the_jobs_labels_and_runs_restricted() -> None:
    """The labels let the job's NetworkPolicy admit the submitter to the dashboard; KubeRay adds its command and
    the token, and the restricted security context lets it run where the Ray pods run."""
    rayjob = build_rayjob(job(example("digits-trainingjob")), SETTINGS)
    submitter = rayjob["spec"]["submitterPodTemplate"]
    assert submitter["metadata"]["labels"]["trainserve.io/trainingjob"] == "digits"
    assert submitter["spec"]["restartPolicy"] == "Never"
    assert submitter["spec"]["automountServiceAccountToken"] is False
    (container,) = submitter["spec"]["containers"]
    assert "command" not in container and container["image"] == "example.com/workloads:1"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert submitter["spec"]["securityContext"]["runAsNonRoot"] is True


def test_entrypoint_carries_the_resolved_spec_with_a_stable_checkpoint_location() -> None:
    document = example("digits-trainingjob")
    first, second = (build_rayjob(job(document), SETTINGS, attempt=n) for n in (1, 2))
    assert first["metadata"]["name"] == "digits-1" and second["metadata"]["name"] == "digits-2"
    argv = shlex.split(first["spec"]["entrypoint"])
    assert argv[:5] == ["python", "-m", "trainserve_workloads.train", "--progress", "kubernetes"]
    config = json.loads(argv[argv.index("--config") + 1])
    assert config == json.loads(shlex.split(second["spec"]["entrypoint"])[-1])
    assert config["spec"]["checkpoint"]["uri"] == document["spec"]["output"]["uri"].rstrip("/") + "/checkpoints"
    assert config["spec"]["training"]["batchSize"]  # defaults are filled in
    assert "status" not in config
    TrainingJob.model_validate(config)  # the workload parses it with the same model


def test_owner_reference_and_labels() -> None:
    rayjob = build_rayjob(job(example("digits-trainingjob")), SETTINGS)
    meta = rayjob["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "trainserve"
    assert meta["labels"]["trainserve.io/trainingjob"] == "digits"
    assert meta["ownerReferences"][0]["uid"] == "uid-1" and meta["ownerReferences"][0]["controller"] is True
    assert "ownerReferences" not in build_rayjob(job(example("digits-trainingjob"), uid=None), SETTINGS)["metadata"]


def test_status_role_is_limited_to_this_jobs_status() -> None:
    _, role, binding = build_status_access(job(example("digits-trainingjob")))
    assert role["rules"] == [
        {
            "apiGroups": ["trainserve.io"],
            "resources": ["trainingjobs/status"],
            "resourceNames": ["digits"],
            "verbs": ["get", "patch"],
        }
    ]
    assert binding["subjects"][0]["name"] == role["metadata"]["name"]


def test_runtime_env_reaches_the_rayjob_for_kuberays_submitter() -> None:
    runtime_env = {
        "workingDir": "https://example.com/team/code.zip",
        "pip": ["scikit-image==0.24.0"],
        "envVars": {"TEAM_FLAG": "on"},
    }
    rayjob = build_rayjob(job(changed(example("digits-trainingjob"), "spec.runtimeEnv", runtime_env)), SETTINGS)
    assert schema_errors(rayjob, kuberay_schema("RayJob")) == []
    assert yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"]) == {
        "working_dir": "https://example.com/team/code.zip",
        "pip": ["scikit-image==0.24.0"],
        "env_vars": {"TEAM_FLAG": "on"},
    }
    assert "runtimeEnvYAML" not in build_rayjob(job(example("digits-trainingjob")), SETTINGS)["spec"]


def test_every_pod_knows_the_attempt_and_the_job_uid_for_the_tracking_tags() -> None:
    trainingjob = job(example("digits-trainingjob"))
    assert trainingjob.metadata.uid
    for attempt in (1, 3):
        for template in templates(build_rayjob(trainingjob, SETTINGS, attempt=attempt)):
            env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
            assert env["TRAINSERVE_ATTEMPT"] == str(attempt)
            assert env["TRAINSERVE_JOB_UID"] == trainingjob.metadata.uid
            assert "envFrom" not in template["spec"]["containers"][0]  # no tracking, no storage Secret
