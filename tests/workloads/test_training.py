"""Real training runs through `trainserve local train`: Ray Train, TensorFlow, checkpoints, resume, S3."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.harness import wait_http
from tests.support.documents import example
from tests.workloads.conftest import cli_env, start_trainserve, trainserve, write_job
from trainserve.api.trainingjob import MULTI_WORKER_STEPS_PER_EXECUTION
from trainserve_workloads.lifecycle import free_port

pytestmark = pytest.mark.slow


def digits_job(tmp_path: Path, **spec_changes: Any) -> dict[str, Any]:
    document = example("digits-trainingjob")
    document["spec"]["output"]["uri"] = str(tmp_path / "models" / "digits")
    for key, value in spec_changes.items():
        document["spec"][key] = value
    return document


def state(tmp_path: Path, name: str = "digits") -> dict[str, Any]:
    return json.loads((tmp_path / ".trainserve" / "trainingjobs" / f"{name}.json").read_text())


def tensorboard_scalars(run_dir: Path) -> tuple[dict[str, dict[int, float]], bool]:
    """What TensorBoard itself reads from a run folder: tag -> {step: value}, and whether a graph is there."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    scalars = {
        tag: {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
        for tag in events.Tags()["tensors"]
    }
    return scalars, bool(events.Tags()["graph"])


def test_digits_example_trains_on_two_workers_and_the_model_reloads(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", digits_job(tmp_path))
    result = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "digits succeeded: model version 1" in result.stdout

    record = state(tmp_path)
    status = record["status"]
    assert status["phase"] == "Succeeded"
    assert status["progress"]["epoch"] == status["progress"]["totalEpochs"] == 12
    assert status["lastCheckpoint"]["epoch"] == 12
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Running": "False", "Succeeded": "True"}
    version_dir = Path(status["model"]["uri"])
    assert version_dir == tmp_path / "models" / "digits" / "1"

    card = json.loads((version_dir / "model.json").read_text())
    assert card["metrics"]["val_accuracy"] >= 0.90
    assert card["workers"] == 2 and card["epochsCompleted"] == 12 and card["resumedFromEpoch"] is None
    assert card["runner"] == "ray"
    assert card["training"]["stepsPerExecution"] == MULTI_WORKER_STEPS_PER_EXECUTION  # several workers' default
    assert card["signature"]["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 64]}]
    assert card["signature"]["outputs"][0]["shape"] == [-1, 10]
    assert card["classes"] == list(range(10))
    assert set(card["frameworks"]) >= {"tensorflow", "tf_keras", "ray", "python"}
    assert status["model"]["metrics"]["val_accuracy"] == pytest.approx(card["metrics"]["val_accuracy"])
    # The chief of two workers wrote the curves and the graph of attempt 1.
    train, graph = tensorboard_scalars(tmp_path / "models" / "digits" / "tensorboard" / "1" / "train")
    assert graph and sorted(train["loss"]) == list(range(1, 13))
    assert train["loss"][12] == pytest.approx(card["metrics"]["loss"], rel=1e-5)
    # Lineage: what the model was trained on, in the card and in the job's status (a ModelService copies it).
    assert card["lineage"]["datasetUri"] == status["model"]["datasetUri"] == "builtin:digits"
    assert card["lineage"]["datasetFingerprint"] == status["model"]["datasetFingerprint"]
    assert card["lineage"]["datasetFingerprint"].startswith("sha256:")
    assert card["lineage"]["resumedFrom"] is None and status["model"]["specHash"] == card["lineage"]["specHash"]
    assert sorted(p.name for p in (tmp_path / "models" / "digits" / "checkpoints").iterdir()) == [
        "epoch-000010",
        "epoch-000011",
        "epoch-000012",
    ]  # keep: 3

    # A fresh process loads the SavedModel alone (no trainserve code) and predicts what the card reports,
    # and its accuracy on the held-out rows (raw pixels in: normalisation is inside the model) is >= 0.9.
    check = f"""
import json, numpy as np, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
from sklearn.datasets import load_digits
card = json.load(open({str(version_dir / "model.json")!r}))
serve = tf.saved_model.load({str(version_dir)!r}).signatures["serving_default"]
sample = serve(features=tf.constant(card["sample"]["inputs"], tf.float32))["predictions"].numpy()
x, y = load_digits(return_X_y=True)
order = np.random.default_rng(42).permutation(len(x))
x, y = x[order].astype("float32"), y[order]
n_val = round(len(x) * 0.2)
predicted = serve(features=tf.constant(x[:n_val]))["predictions"].numpy().argmax(axis=1)
print(json.dumps({{"sample": sample.tolist(), "accuracy": float((predicted == y[:n_val]).mean())}}))
"""
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    outcome = json.loads(loaded.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(outcome["sample"], card["sample"]["predictions"], rtol=1e-5, atol=1e-6)
    assert outcome["accuracy"] >= 0.90
    assert outcome["accuracy"] == pytest.approx(card["metrics"]["val_accuracy"], abs=0.03)
    # The card's figures count the rows of both workers, not the chief's half: whole rows of all 359 (1,438).
    for metric, rows in (("val_accuracy", 359), ("accuracy", 1438)):
        counted = card["metrics"][metric] * rows
        assert counted == pytest.approx(round(counted), abs=1e-3), (metric, card["metrics"][metric])

    again = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "already succeeded" in again.stdout  # a finished job is not re-run


def _complete_checkpoints(root: Path) -> dict[int, float]:
    """Epoch -> modification time of the completion marker."""
    return {int(p.parent.name.split("-")[1]): p.stat().st_mtime for p in root.glob("epoch-*/checkpoint.json")}


#: Enough epochs that a Ctrl-C after the second checkpoint lands well before the end (an epoch of digits in the
#: command's own process is a fraction of a second).
RESUME_EPOCHS = 40


def test_interrupted_run_resumes_from_its_checkpoint_without_repeating_epochs(
    tmp_path: Path, mlflow_server: str
) -> None:
    tracking = {
        "mlflow": {"trackingUri": mlflow_server, "experiment": "resume", "registeredModelName": "digits-resume"}
    }
    document = digits_job(
        tmp_path,
        training=example("digits-trainingjob")["spec"]["training"] | {"epochs": RESUME_EPOCHS},
        resources={"workers": 1, "cpusPerWorker": 1},
        checkpoint={"everyEpochs": 1, "keep": 100},
        tracking=tracking,
    )
    job = write_job(tmp_path / "job.yaml", document)
    checkpoints = tmp_path / "models" / "digits" / "checkpoints"
    first = start_trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)
    deadline = time.monotonic() + 240
    while len(_complete_checkpoints(checkpoints)) < 2:
        assert first.poll() is None, (
            f"the run ended before its second checkpoint:\n{first.stdout.read() if first.stdout else ''}"
        )
        assert time.monotonic() < deadline, "no second checkpoint within 4 minutes"
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 130, output[-3000:]
    assert "interrupted" in output
    before = _complete_checkpoints(checkpoints)
    assert 2 <= max(before) < RESUME_EPOCHS
    interrupted = state(tmp_path)["status"]
    assert interrupted["phase"] == "Suspended"
    assert {c["type"]: c["reason"] for c in interrupted["conditions"]}["Running"] == "Interrupted"

    restarted_at = time.time()
    result = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    card = json.loads((tmp_path / "models" / "digits" / "1" / "model.json").read_text())
    assert card["resumedFromEpoch"] == max(before) >= 2
    assert card["lineage"]["resumedFrom"].endswith(f"epoch-{max(before):06d}")
    after = _complete_checkpoints(checkpoints)
    assert sorted(after) == list(range(1, RESUME_EPOCHS + 1))
    # Epochs finished before the interruption were not trained (nor checkpointed) again.
    assert all(after[epoch] == before[epoch] for epoch in before)
    assert all(after[epoch] >= restarted_at for epoch in after if epoch > max(before))
    final = state(tmp_path)["status"]
    assert final["phase"] == "Succeeded" and final["attempts"] == 2
    assert card["metrics"]["val_accuracy"] >= 0.85
    _check_resumed_curves(tmp_path, final, card, max(before))
    _check_resumed_mlflow_run(mlflow_server, final, card, max(before))
    _check_local_tensorboard(tmp_path)


def _check_local_tensorboard(tmp_path: Path) -> None:
    """`trainserve local tensorboard digits` serves both attempts' runs."""
    port = free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "trainserve.cli", "local", "tensorboard", "digits", "--port", str(port)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/data/runs", board, timeout=120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=10) as response:
            runs = json.loads(response.read())
        assert sorted(runs) == ["1/train", "1/validation", "2/train", "2/validation"]
    finally:
        board.terminate()
        board.wait(timeout=30)


def _check_resumed_curves(tmp_path: Path, status: dict[str, Any], card: dict[str, Any], resumed_from: int) -> None:
    """Attempt 2's curves continue attempt 1's at the absolute epoch, and end at the model card's figures."""
    logdir = tmp_path / "models" / "digits" / "tensorboard"
    assert status["tensorboard"] == str(logdir)
    first, first_graph = tensorboard_scalars(logdir / "1" / "train")
    second, second_graph = tensorboard_scalars(logdir / "2" / "train")
    validation, _ = tensorboard_scalars(logdir / "2" / "validation")
    assert first_graph and second_graph
    # Attempt 1 was stopped after the checkpoint of `resumed_from` (maybe before logging that epoch).
    assert sorted(first["loss"]) == list(range(1, len(first["loss"]) + 1)) and len(first["loss"]) >= resumed_from - 1
    assert sorted(second["loss"]) == sorted(validation["accuracy"]) == list(range(resumed_from + 1, RESUME_EPOCHS + 1))
    assert set(second) >= {"loss", "accuracy", "learning_rate", "samples_per_second"}
    assert second["loss"][RESUME_EPOCHS] == pytest.approx(card["metrics"]["loss"], rel=1e-5)
    assert validation["accuracy"][RESUME_EPOCHS] == pytest.approx(card["metrics"]["val_accuracy"], rel=1e-5)
    assert validation["loss"][RESUME_EPOCHS] == pytest.approx(card["metrics"]["val_loss"], rel=1e-5)
    assert second["learning_rate"][RESUME_EPOCHS] == pytest.approx(0.002)
    assert all(rate > 0 for rate in second["samples_per_second"].values())


def _check_resumed_mlflow_run(server: str, status: dict[str, Any], card: dict[str, Any], resumed_from: int) -> None:
    """Both attempts logged into one run, which holds the card and the model, registered as version 1."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("resume")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [status["mlflow"]["runId"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["trainserve.name"] == "digits" and run.data.tags["trainserve.attempt"] == "2"
    assert run.data.params["training.epochs"] == str(RESUME_EPOCHS) and run.data.params["resources.workers"] == "1"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    assert (
        set(range(1, resumed_from)) | set(range(resumed_from + 1, RESUME_EPOCHS + 1))
        <= set(history)
        <= set(range(1, RESUME_EPOCHS + 1))
    )
    assert history[RESUME_EPOCHS] == pytest.approx(card["metrics"]["val_accuracy"], rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "model")
    }
    assert {"model.json", "model/saved_model.pb", "model/model.json"} <= artifacts
    versions = client.search_model_versions("name='digits-resume'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run.info.run_id)]
    assert status["mlflow"]["registeredVersion"] == "1"
    tracked = next(c for c in status["conditions"] if c["type"] == "Tracking")
    assert (tracked["status"], tracked["reason"]) == ("True", "Tracked")
    _check_served_from_the_registry(server, card)


def _check_served_from_the_registry(server: str, card: dict[str, Any]) -> None:
    """`models:/digits-resume/1` resolves as the operator resolves it, and loads as a replica loads it: the files
    downloaded through the tracking server, the registry's version number in the answers."""
    import numpy as np

    from trainserve.registry import lookup
    from trainserve_workloads.serve.model import load_model

    registered = lookup(server, "models:/digits-resume/1")
    assert registered.source.startswith("mlflow-artifacts:/")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", server)
        served = load_model(registered.source, runtime="tensorflow", version=registered.version)
        again = load_model(registered.source, runtime="tensorflow")  # a second replica: the same local copy
    assert served.version == 1 and again.version == card["version"]
    rows = np.asarray(card["sample"]["inputs"], dtype=np.float32)
    np.testing.assert_allclose(served.predict(rows), np.asarray(card["sample"]["predictions"]), rtol=1e-5)


def test_an_unreachable_mlflow_server_is_a_warning_and_the_model_is_still_published(tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    document = digits_job(
        tmp_path,
        training=example("digits-trainingjob")["spec"]["training"] | {"epochs": 2},
        resources={"workers": 1, "cpusPerWorker": 1},
        tracking={"mlflow": {"trackingUri": unreachable, "experiment": "nowhere", "registeredModelName": "x"}},
    )
    job = write_job(tmp_path / "job.yaml", document)
    result = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "digits succeeded: model version 1" in result.stdout
    status = state(tmp_path)["status"]
    tracked = next(c for c in status["conditions"] if c["type"] == "Tracking")
    assert (tracked["status"], tracked["reason"]) == ("False", "TrackingUnavailable")
    assert unreachable in tracked["message"] and status["mlflow"]["error"] == tracked["message"]
    train, _ = tensorboard_scalars(tmp_path / "models" / "digits" / "tensorboard" / "1" / "train")
    assert sorted(train["loss"]) == [1, 2]  # the curves do not depend on the server


def test_parquet_on_s3_with_a_user_model_writes_the_model_to_s3(tmp_path: Path, s3_server: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    table = pa.table({**{f"p{i}": x[:, i] for i in range(64)}, "digit": y})
    endpoint = s3_server["AWS_ENDPOINT_URL"].removeprefix("http://")
    fs = pafs.S3FileSystem(
        access_key=s3_server["AWS_ACCESS_KEY_ID"],
        secret_key=s3_server["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        endpoint_override=endpoint,
        scheme="http",
    )
    pq.write_table(table, "ml-data/data/digits.parquet", filesystem=fs)

    document = example("digits-trainingjob")
    document["metadata"]["name"] = "digits-s3"
    document["spec"]["model"] = {"entrypoint": "tests.workloads.user_models:small_mlp"}
    document["spec"]["dataset"] = {
        "uri": "s3://ml-data/data/digits.parquet",
        "format": "parquet",
        "labelColumn": "digit",
    }
    document["spec"]["training"] |= {"epochs": 6, "hyperparameters": {"width": 40}}
    document["spec"]["resources"] = {"workers": 1}
    document["spec"]["output"] = {"uri": "s3://ml-data/models/digits"}
    job = write_job(tmp_path / "job.yaml", document)
    result = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path, env=s3_server)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "model version 1 at s3://ml-data/models/digits/1" in result.stdout

    card = json.loads(fs.open_input_stream("ml-data/models/digits/1/model.json").read())
    assert card["hyperparameters"] == {"width": 40}
    assert card["model"] == {"entrypoint": "tests.workloads.user_models:small_mlp"}
    assert card["metrics"]["val_accuracy"] >= 0.85
    assert card["featureNames"][:2] == ["p0", "p1"]
    assert fs.get_file_info("ml-data/models/digits/1/saved_model.pb").type == pafs.FileType.File
    markers = fs.get_file_info(pafs.FileSelector("ml-data/models/digits/checkpoints", recursive=True))
    assert any(info.path.endswith("epoch-000006/checkpoint.json") for info in markers)
    # TensorBoard's events, written locally by the chief and uploaded after every epoch
    events = fs.get_file_info(pafs.FileSelector("ml-data/models/digits/tensorboard/1", recursive=True))
    assert {info.path.split("/")[-2] for info in events if "tfevents" in info.path} == {"train", "validation"}


@pytest.mark.parametrize("runner", ["process", "ray"])
def test_a_run_that_fails_in_the_workers_reports_why_and_leaves_no_model(tmp_path: Path, runner: str) -> None:
    """In the command's own process (one worker's default) and under Ray Train (`--ray`), the same verdict."""
    document = digits_job(
        tmp_path, model={"entrypoint": "tests.workloads.user_models:too_few_outputs"}, resources={"workers": 1}
    )
    job = write_job(tmp_path / "job.yaml", document)
    ray = ["--ray"] if runner == "ray" else []
    result = trainserve("local", "train", "-f", str(job), "--no-progress", *ray, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert "digits failed" in result.stdout
    status = state(tmp_path)["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert "label" in failed["message"].lower() or "3" in failed["message"], failed
    output = tmp_path / "models" / "digits"
    # No model version; the run's TensorBoard events stay (they help to see why it failed).
    assert [p.name for p in output.iterdir() if p.name not in ("checkpoints", "tensorboard")] == []


def test_one_worker_trains_in_the_command_itself_without_ray(tmp_path: Path) -> None:
    """The default for one worker: no Ray at all (it cannot even be imported here), the same model and card."""
    document = digits_job(tmp_path, resources={"workers": 1, "cpusPerWorker": 1})
    document["spec"]["training"] = {**document["spec"]["training"], "epochs": 3}
    job = write_job(tmp_path / "job.yaml", document)
    without_ray = "import sys; sys.modules['ray'] = None; from trainserve.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", without_ray, "local", "train", "-f", str(job), "--no-progress"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    # TensorFlow's start-up lines (no CUDA driver, oneDNN) stay off the terminal without --verbose.
    assert "cuda" not in result.stderr.lower() and "oneDNN" not in result.stderr, result.stderr[-2000:]
    card = json.loads((tmp_path / "models" / "digits" / "1" / "model.json").read_text())
    assert card["runner"] == "process" and card["workers"] == 1 and card["epochsCompleted"] == 3
    assert card["metrics"]["val_accuracy"] >= 0.7
    status = state(tmp_path)["status"]
    assert status["phase"] == "Succeeded" and status["lastCheckpoint"]["epoch"] == 3


def test_a_failed_attempt_in_the_command_restarts_from_the_last_checkpoint(tmp_path: Path) -> None:
    """runPolicy.workerRestarts holds in the command's own process as under Ray Train: the failed attempt is
    trained again, once, and the card counts the restart."""
    markers = tmp_path / "builds"
    markers.mkdir()
    document = digits_job(
        tmp_path,
        model={"entrypoint": "tests.workloads.user_models:fails_in_the_first_training_attempt"},
        resources={"workers": 1},
        runPolicy={"workerRestarts": 1},
    )
    document["spec"]["training"] = {**document["spec"]["training"], "epochs": 2}
    document["spec"]["training"]["hyperparameters"] = {"marker_dir": str(markers)}
    job = write_job(tmp_path / "job.yaml", document)
    result = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert sorted(p.name for p in markers.iterdir()) == ["build-1", "build-2", "build-3"]  # preflight, 2 attempts
    card = json.loads((tmp_path / "models" / "digits" / "1" / "model.json").read_text())
    assert card["runner"] == "process" and card["workerRestarts"] == 1
    assert state(tmp_path)["status"]["phase"] == "Succeeded"


TEAM_CODE = '''
import os
from pathlib import Path


def build(input_shape, num_outputs, marker_dir, **_):
    """A team's model, from its own package; notes which process built it and what TEAM_FLAG said there."""
    import tf_keras as keras

    Path(marker_dir, f"{os.getpid()}.txt").write_text(os.environ.get("TEAM_FLAG", "unset"))
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Rescaling(1.0 / 16.0)(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(hidden))
'''


@pytest.mark.parametrize("workers", [1, 2])
def test_an_entrypoint_from_a_runtime_env_working_dir_trains_without_an_image(tmp_path: Path, workers: int) -> None:
    """On Ray's workers (2) and in the command itself (1): the code's folder and envVars hold the same way."""
    package = tmp_path / "team-repo" / "teamcode"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(TEAM_CODE)
    markers = tmp_path / "markers"
    markers.mkdir()
    document = digits_job(tmp_path)
    document["spec"]["model"] = {"entrypoint": "teamcode.models:build"}
    document["spec"]["training"] = {**document["spec"]["training"], "epochs": 2}
    document["spec"]["training"]["hyperparameters"] = {"marker_dir": str(markers)}
    document["spec"]["runtimeEnv"] = {"workingDir": str(tmp_path / "team-repo"), "envVars": {"TEAM_FLAG": "on"}}
    document["spec"]["resources"]["workers"] = workers
    job = write_job(tmp_path / "job.yaml", document)
    probe = subprocess.run([sys.executable, "-c", "import teamcode"], cwd=tmp_path, env=cli_env(), capture_output=True)
    assert probe.returncode != 0, "the package must not be importable without the runtime env"

    result = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert state(tmp_path)["status"]["phase"] == "Succeeded"
    seen = [p.read_text() for p in markers.iterdir()]
    assert "on" in seen, f"the workers run with runtimeEnv.envVars: {seen}"
    card = json.loads((tmp_path / "models" / "digits" / "1" / "model.json").read_text())
    assert card["runner"] == ("process" if workers == 1 else "ray")


def test_a_missing_working_dir_is_a_clear_error(tmp_path: Path) -> None:
    document = digits_job(tmp_path)
    document["spec"]["runtimeEnv"] = {"workingDir": str(tmp_path / "nowhere")}
    job = write_job(tmp_path / "job.yaml", document)
    result = trainserve("local", "train", "-f", str(job), "--no-progress", cwd=tmp_path)  # its own local state
    assert result.returncode == 2
    assert "spec.runtimeEnv.workingDir" in result.stderr and "is not a folder" in result.stderr


def test_the_pvc_examples_train_and_serve_locally_through_the_volumes_folder(tmp_path: Path) -> None:
    """The digits examples as shipped (pvc://models/digits): `local train`, then `local serve`, then a query."""
    import urllib.request

    job = example("digits-trainingjob")
    assert job["spec"]["output"]["uri"] == "pvc://models/digits"
    job["spec"]["training"] = {**job["spec"]["training"], "epochs": 6}
    result = trainserve(
        "local", "train", "-f", str(write_job(tmp_path / "job.yaml", job)), "--no-progress", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert state(tmp_path)["status"]["model"]["uri"] == "pvc://models/digits/1", "the model keeps the URI's form"
    assert (tmp_path / ".trainserve" / "volumes" / "models" / "digits" / "1" / "model.json").exists()

    service = write_job(tmp_path / "service.yaml", example("digits-modelservice"))
    port = free_port()
    command = [sys.executable, "-m", "trainserve.cli", "local", "serve", "-f", str(service), "--port", str(port)]
    server = subprocess.Popen(command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/models/digits:predict",
                    data=json.dumps({"instances": [[0.0] * 64]}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = json.loads(response.read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "local serve did not come up"
                time.sleep(1)
        assert len(answer["predictions"][0]) == 10 and answer["model_version"] == "1"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
