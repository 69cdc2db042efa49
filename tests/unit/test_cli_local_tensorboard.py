"""`trainserve local tensorboard`: which logdirs it opens, and what it says when there is nothing to show."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.documents import changed, example
from trainserve.api.trainingjob import TrainingJob, TrainingJobStatus
from trainserve.cli import _tensorboard_logdirs, main


def test_no_local_job_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "tensorboard", "digits", "--state-dir", str(tmp_path)]) == 1
    assert "no local TrainingJob named 'digits'" in capsys.readouterr().out


def test_logdirs_are_local_folders_for_claims_and_uris_for_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINSERVE_VOLUMES_DIR", str(tmp_path / "volumes"))
    on_claim = TrainingJob.model_validate(example("digits-trainingjob"))  # pvc://models/digits
    in_bucket = TrainingJob.model_validate(changed(example("digits-gpu-trainingjob"), "metadata.name", "gpu"))
    in_bucket.status = TrainingJobStatus(tensorboard="s3://ml-models/models/digits-gpu/tensorboard")
    assert _tensorboard_logdirs([on_claim, in_bucket]) == {
        "digits": str(tmp_path / "volumes" / "models" / "digits" / "tensorboard"),
        "gpu": "s3://ml-models/models/digits-gpu/tensorboard",
    }
