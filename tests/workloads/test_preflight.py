"""Bad input is caught before any Ray worker starts, each with its field path and a fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.documents import example
from tests.workloads.conftest import trainserve, write_job
from trainserve.api.trainingjob import TrainingJobSpec
from trainserve_workloads.errors import WorkloadError
from trainserve_workloads.train import absolute_uris, preflight


def spec_with(tmp_path: Path, **changes: Any) -> TrainingJobSpec:
    document = example("digits-trainingjob")["spec"]
    document["output"]["uri"] = str(tmp_path / "out")
    document.update(changes)
    return TrainingJobSpec.model_validate(document)


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0], "target": [0, 1, 0, 1]}), path)
    return path


def failure(spec: TrainingJobSpec) -> WorkloadError:
    with pytest.raises(WorkloadError) as caught:
        preflight(absolute_uris(spec))
    assert caught.value.fix
    return caught.value


def test_missing_dataset_file(tmp_path: Path) -> None:
    error = failure(spec_with(tmp_path, dataset={"uri": str(tmp_path / "nope.csv"), "format": "csv"}))
    assert error.path == "spec.dataset.uri" and "no file" in error.message


def test_label_column_not_in_table(tmp_path: Path, table_file: Path) -> None:
    error = failure(spec_with(tmp_path, dataset={"uri": str(table_file), "format": "parquet", "labelColumn": "digit"}))
    assert error.path == "spec.dataset.labelColumn"
    assert "'digit'" in error.message and "target" in error.message


def test_feature_column_not_in_table(tmp_path: Path, table_file: Path) -> None:
    dataset = {"uri": str(table_file), "format": "parquet", "labelColumn": "target", "featureColumns": ["a", "c"]}
    error = failure(spec_with(tmp_path, dataset=dataset))
    assert error.path == "spec.dataset.featureColumns" and "'c'" in error.message


def test_text_feature_column_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "words.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "word": ["x", "y", "z"], "label": [0, 1, 0]}), path)
    error = failure(spec_with(tmp_path, dataset={"uri": str(path), "format": "parquet"}))
    assert error.path == "spec.dataset.featureColumns" and "not numeric" in error.message


def test_cnn_shape_is_checked_against_a_parquet_files_columns(tmp_path: Path, table_file: Path) -> None:
    dataset = {"uri": str(table_file), "format": "parquet", "labelColumn": "target"}
    error = failure(spec_with(tmp_path, dataset=dataset, model={"builtin": {"name": "cnn", "inputShape": [3, 1]}}))
    assert error.path == "spec.model.builtin.inputShape" and "2 features" in error.message


def test_npz_without_the_expected_arrays(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, features=np.zeros((4, 2)), labels=np.zeros(4))
    error = failure(spec_with(tmp_path, dataset={"uri": str(path), "format": "npz"}))
    assert error.path == "spec.dataset.uri" and "x, y" in error.message


def test_entrypoint_module_that_does_not_import(tmp_path: Path) -> None:
    error = failure(spec_with(tmp_path, model={"entrypoint": "no_such_package.models:build"}))
    assert error.path == "spec.model.entrypoint" and "cannot import" in error.message


def test_entrypoint_function_missing(tmp_path: Path) -> None:
    error = failure(spec_with(tmp_path, model={"entrypoint": "tests.workloads.user_models:nothing_here"}))
    assert error.path == "spec.model.entrypoint" and "no function" in error.message


def test_entrypoint_that_returns_no_model(tmp_path: Path) -> None:
    error = failure(spec_with(tmp_path, model={"entrypoint": "tests.workloads.user_models:not_a_model"}))
    assert error.path == "spec.model.entrypoint" and "did not return a tf_keras Model" in error.message


def test_entrypoint_that_returns_a_keras3_model_is_told_to_use_tf_keras(tmp_path: Path) -> None:
    error = failure(spec_with(tmp_path, model={"entrypoint": "tests.workloads.user_models:keras3_model"}))
    assert "tf_keras" in error.message


def test_output_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    error = failure(spec_with(tmp_path, output={"uri": str(blocker / "models")}))
    assert error.path == "spec.output.uri" and "cannot write" in error.message


def test_unsupported_storage_scheme(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError) as caught:
        absolute_uris(spec_with(tmp_path, output={"uri": "gs://bucket/models"}))
    assert caught.value.path == "spec.output.uri" and "gs" in caught.value.message


def test_batch_smaller_than_the_worker_count(tmp_path: Path) -> None:
    error = failure(spec_with(tmp_path, training={"batchSize": 1}, resources={"workers": 2}))
    assert error.path == "spec.training.batchSize"


def test_cnn_shape_that_does_not_fit_the_features(tmp_path: Path) -> None:
    error = failure(spec_with(tmp_path, model={"builtin": {"name": "cnn", "inputShape": [7, 7, 1]}}))
    assert error.path == "spec.model.builtin.inputShape" and "64" in error.message


def test_cli_reports_the_problem_and_starts_no_ray(tmp_path: Path) -> None:
    document = example("digits-trainingjob")
    document["spec"]["dataset"] = {"uri": str(tmp_path / "missing.npz"), "format": "npz"}
    document["spec"]["output"]["uri"] = str(tmp_path / "out")
    result = trainserve(
        "local", "train", "-f", str(write_job(tmp_path / "job.yaml", document)), cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "spec.dataset.uri: no file at" in result.stderr and "fix:" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_refuses_an_invalid_document_with_the_field_path(tmp_path: Path) -> None:
    document = example("digits-trainingjob")
    document["spec"]["resources"]["gpusPerWorker"] = -1
    result = trainserve(
        "local", "train", "-f", str(write_job(tmp_path / "job.yaml", document)), cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "spec.resources.gpusPerWorker" in result.stderr


def test_the_dataset_fingerprint_names_the_data_trained_on(tmp_path: Path) -> None:
    """Same file, same fingerprint; the same features with shuffled labels (a model no better than chance), another."""
    from trainserve_workloads.datasets import load_dataset

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)).astype("float32"), rng.integers(0, 3, 200)
    np.savez(tmp_path / "good.npz", x=x, y=y)
    np.savez(tmp_path / "shuffled.npz", x=x, y=rng.permutation(y))
    spec = TrainingJobSpec.model_validate(example("digits-trainingjob")["spec"]).dataset

    def fingerprint(name: str) -> str:
        dataset = spec.model_copy(update={"builtin": None, "uri": str(tmp_path / name), "format": "npz"})
        return load_dataset(dataset, "sparse_categorical_crossentropy").fingerprint()

    assert fingerprint("good.npz") == fingerprint("good.npz")
    assert fingerprint("good.npz") != fingerprint("shuffled.npz")
    assert fingerprint("good.npz").startswith("sha256:") and len(fingerprint("good.npz")) == len("sha256:") + 64
