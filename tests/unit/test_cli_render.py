"""`trainserve render`: what the operator would create, for TrainingJobs and ModelServices."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from ray.serve.schema import ServeDeploySchema

from tests.support.documents import EXAMPLES
from tests.support.schemas import kuberay_schema, schema_errors
from trainserve.cli import main


def render(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[list[dict], str]:  # type: ignore[type-arg]
    code = main(["render", "-f", str(path), "--namespace", "ml"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return list(yaml.safe_load_all(captured.out)), captured.err


def test_a_job_and_the_service_serving_it_render_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(
        (EXAMPLES / "digits-trainingjob.yaml").read_text()
        + "\n---\n"
        + (EXAMPLES / "digits-modelservice.yaml").read_text()
    )
    objects, err = render(capsys, both)
    assert [o["kind"] for o in objects] == ["RayJob", "NetworkPolicy", "RayService", "NetworkPolicy"] and err == ""
    rayservice = objects[2]
    assert schema_errors(rayservice, kuberay_schema("RayService")) == []
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    server = config["applications"][0]["deployments"][0]
    # fromTrainingJob in the same file: that job's output folder (the application serves its newest version)
    assert server["user_config"]["primary"]["uri"] == "pvc://models/digits"
    # the claim is mounted where the workloads look for it: read-write for training, read-only for serving
    for obj, read_only in ((objects[0], False), (rayservice, True)):
        cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
        for pod in [cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]]:
            claim = next(v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v)
            assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": read_only}
            container = pod["spec"]["containers"][0]
            mount = next(m for m in container["volumeMounts"] if m["name"] == claim["name"])
            assert mount["mountPath"] == "/mnt/trainserve/volumes/models" and mount["readOnly"] is read_only
            assert {"name": "TRAINSERVE_VOLUMES_DIR", "value": "/mnt/trainserve/volumes"} in container["env"]


def test_a_service_whose_job_is_elsewhere_renders_with_a_named_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    objects, err = render(capsys, EXAMPLES / "digits-gpu-modelservice.yaml")
    assert [o["kind"] for o in objects] == ["RayService", "NetworkPolicy"]
    assert "spec.model.fromTrainingJob: TrainingJob 'digits-gpu' is not in this file" in err
    assert "<status.model.uri of TrainingJob digits-gpu>" in objects[0]["spec"]["serveConfigV2"]


def test_render_shows_the_upgrade_strategy_queue_and_priority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load((EXAMPLES / "digits-gpu-modelservice.yaml").read_text())
    document["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "serving"}
    document["spec"]["podTemplate"] = {"spec": {"priorityClassName": "online-serving"}}
    path = tmp_path / "ms.yaml"
    path.write_text(yaml.safe_dump(document))
    objects, _ = render(capsys, path)
    rayservice = next(o for o in objects if o["kind"] == "RayService")
    assert schema_errors(rayservice, kuberay_schema("RayService")) == []
    assert rayservice["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "serving"
    assert rayservice["spec"]["upgradeStrategy"]["type"] == "NewClusterWithIncrementalUpgrade"
    assert rayservice["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["stepSizePercent"] == 25
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    assert {t["spec"]["priorityClassName"] for t in templates} == {"online-serving"}


def test_every_example_renders_with_authentication_and_a_valid_network_policy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        objects, _ = render(capsys, path)
        for obj in objects:
            if obj["kind"] == "NetworkPolicy":
                kubernetes_validate.validate(obj, latest_version(), strict=True)
            else:
                assert schema_errors(obj, kuberay_schema(obj["kind"])) == []
                cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
                assert cluster["authOptions"] == {"mode": "token"}, path.name
        ray_objects = [o for o in objects if o["kind"] != "NetworkPolicy"]
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        assert len(policies) == len(ray_objects) >= 1, path.name


def test_render_shows_the_tracking_credentials_by_reference_only(capsys: pytest.CaptureFixture[str]) -> None:
    objects, _ = render(capsys, EXAMPLES / "digits-gpu-trainingjob.yaml")
    rayjob = objects[0]
    assert schema_errors(rayjob, kuberay_schema("RayJob")) == []
    cluster = rayjob["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": "mlflow-credentials"}} in container["envFrom"]
        names = {e["name"] for e in container["env"]}
        assert {"TRAINSERVE_ATTEMPT", "TRAINSERVE_JOB_UID"} <= names and not any("MLFLOW" in n for n in names)
    # the workload reads the server and experiment from its resolved spec
    assert "http://mlflow.mlflow.svc:5000" in rayjob["spec"]["entrypoint"]
