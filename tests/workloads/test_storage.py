"""Checkpoint and model layouts on local storage (no Ray, no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.documents import example
from trainserve.api.trainingjob import TrainingJobSpec
from trainserve_workloads import checkpoints, modelstore
from trainserve_workloads.errors import WorkloadError
from trainserve_workloads.storage import locate


def fake_checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "local-ckpt"
    folder.mkdir(exist_ok=True)
    (folder / "weights.index").write_bytes(b"index")
    return folder


def test_checkpoints_keep_the_newest_and_ignore_partial_ones(tmp_path: Path) -> None:
    root = locate(str(tmp_path / "ckpt"))
    for epoch in range(1, 6):
        checkpoints.write_checkpoint(root, epoch, str(fake_checkpoint(tmp_path)), "fp", {"loss": 1.0 / epoch}, keep=2)
    (tmp_path / "ckpt" / "epoch-000009").mkdir()  # a killed upload: no marker
    assert [r.epoch for r in checkpoints.list_checkpoints(root)] == [4, 5]
    newest = checkpoints.latest_checkpoint(root, "fp")
    assert newest is not None and newest.epoch == 5 and newest.metrics == {"loss": 0.2}
    checkpoints.remove_partial(root)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-000004", "epoch-000005"]


def test_checkpoints_of_another_recipe_are_refused(tmp_path: Path) -> None:
    root = locate(str(tmp_path / "ckpt"))
    checkpoints.write_checkpoint(root, 1, str(fake_checkpoint(tmp_path)), "other", {}, keep=3)
    with pytest.raises(WorkloadError) as caught:
        checkpoints.latest_checkpoint(root, "mine")
    assert caught.value.path == "spec.checkpoint.uri"


def test_fingerprint_ignores_epochs_but_not_the_recipe() -> None:
    spec = TrainingJobSpec.model_validate(example("digits-trainingjob")["spec"])
    longer = spec.model_copy(deep=True)
    longer.training.epochs = 50
    other = spec.model_copy(deep=True)
    other.training.optimizer.learning_rate = 0.1
    assert checkpoints.fingerprint(spec) == checkpoints.fingerprint(longer)
    assert checkpoints.fingerprint(spec) != checkpoints.fingerprint(other)


def test_model_versions_count_up_and_a_failed_publish_leaves_nothing(tmp_path: Path) -> None:
    output = locate(str(tmp_path / "models"))
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"pb")
    assert modelstore.publish(output, saved, {"metrics": {}})[0] == 1
    assert modelstore.publish(output, saved, {"metrics": {}})[0] == 2
    with pytest.raises(TypeError):
        modelstore.publish(output, saved, {"metrics": object()})  # the card cannot be written
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["1", "2"]
    assert modelstore.versions(output) == [1, 2]
    location, card = modelstore.resolve(str(tmp_path / "models"))
    assert location.name == "2" and card["version"] == 2
    assert json.loads((tmp_path / "models" / "1" / "model.json").read_text())["uri"] == str(tmp_path / "models" / "1")
    with pytest.raises(FileNotFoundError):
        modelstore.resolve(str(tmp_path / "nothing"))


def test_pvc_uris_live_under_the_volumes_folder_and_keep_their_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINSERVE_VOLUMES_DIR", str(tmp_path / "volumes"))
    location = locate("pvc://models/digits/")
    assert location.path == str(tmp_path / "volumes" / "models" / "digits")
    assert location.uri == "pvc://models/digits" and location.child("3").uri == "pvc://models/digits/3"
    location.child("3", "model.json").write_text("{}")
    assert (tmp_path / "volumes" / "models" / "digits" / "3" / "model.json").exists()


def test_pvc_defaults_to_the_local_trainserve_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINSERVE_VOLUMES_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert locate("pvc://data/train.parquet").path == str(
        tmp_path / ".trainserve" / "volumes" / "data" / "train.parquet"
    )
    with pytest.raises(ValueError, match="pvc://CLAIM/PATH"):
        locate("pvc:///no-claim")
