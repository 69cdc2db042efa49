"""`trainserve render`: what the operator would create, for TrainingJobs and ModelServices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
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
    assert [o["kind"] for o in objects] == ["RayJob", "RayService", "NetworkPolicy"] and err == ""
    rayservice = objects[1]
    assert schema_errors(rayservice, kuberay_schema("RayService")) == []
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    server = config["applications"][0]["deployments"][0]
    # fromTrainingJob in the same file: that job's output folder (the application serves its newest version)
    assert server["user_config"]["primary"]["uri"] == "./.trainserve/models/digits"


def test_a_service_whose_job_is_elsewhere_renders_with_a_named_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    objects, err = render(capsys, EXAMPLES / "digits-gpu-modelservice.yaml")
    assert [o["kind"] for o in objects] == ["RayService", "NetworkPolicy"]
    assert "spec.model.fromTrainingJob: TrainingJob 'digits-gpu' is not in this file" in err
    assert "<status.model.uri of TrainingJob digits-gpu>" in objects[0]["spec"]["serveConfigV2"]
