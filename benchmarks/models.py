"""Models for the serving benchmark, in the layout training writes (SavedModel + model.json)."""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HEAVY_SHAPE = (1024, 4096, 4096, 10)


def digits_mlp(output: Path) -> str:
    """The digits example's mlp, fit for a few epochs in-process and published through the training code."""
    from datetime import datetime

    import yaml

    from trainserve.api.trainingjob import TrainingJobSpec
    from trainserve_workloads.datasets import load_dataset
    from trainserve_workloads.models import build_model, compile_model
    from trainserve_workloads.train_loop import RunFacts, publish_model

    document = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "examples" / "digits-trainingjob.yaml").read_text()
    )
    document["spec"]["output"]["uri"] = str(output)
    spec = TrainingJobSpec.model_validate(document["spec"])
    data = load_dataset(spec.dataset, spec.training.loss)
    model = build_model(spec, data.n_features, len(data.classes), data.x_train)
    compile_model(model, spec.training)
    history = model.fit(data.x_train, data.y_train, epochs=5, batch_size=64, verbose=0)
    metrics = {k: float(v[-1]) for k, v in history.history.items()}
    status = publish_model(model, spec, data, RunFacts({"name": "digits"}, metrics, None, datetime.now(UTC), 1))
    assert status.uri is not None
    return status.uri


def heavy(output: Path) -> str:
    """A compute-heavy dense network (one row: several milliseconds here), random weights, same layout."""
    import json
    import tempfile

    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from trainserve_workloads import modelstore
    from trainserve_workloads.storage import locate
    from trainserve_workloads.train_loop import _export

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(HEAVY_SHAPE[0],), name="features")
    hidden = inputs
    for width in HEAVY_SHAPE[1:-1]:
        hidden = keras.layers.Dense(width, activation="relu")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(HEAVY_SHAPE[-1], activation="softmax", name="predictions")(hidden))
    with tempfile.TemporaryDirectory() as folder:
        _export(model, HEAVY_SHAPE[0], folder)
        sample = np.zeros((1, HEAVY_SHAPE[0]), dtype="float32")
        card = {
            "name": "heavy",
            "signature": {
                "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, HEAVY_SHAPE[0]]}],
                "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [-1, HEAVY_SHAPE[-1]]}],
            },
            "metrics": {},
            "sample": {"inputs": sample.tolist(), "predictions": model(tf.constant(sample)).numpy().tolist()},
        }
        _, location = modelstore.publish(locate(str(output)), folder, json.loads(json.dumps(card)))
    return location.uri


MAKERS = {"digits": digits_mlp, "heavy": heavy}
FEATURES = {"digits": 64, "heavy": HEAVY_SHAPE[0]}


def in_process(uri: str, features: int, seconds: float) -> dict[str, float]:
    """The limit of any server: the model's signature called with one row in a loop, no HTTP."""
    import time

    import numpy as np
    import tensorflow as tf

    from trainserve_workloads.modelstore import resolve

    location, _ = resolve(uri)
    signature = tf.saved_model.load(location.path).signatures["serving_default"]
    x = tf.constant(np.random.default_rng(0).random((1, features), dtype=np.float32))
    for _ in range(20):
        signature(features=x)
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        signature(features=x)["predictions"].numpy()
        times.append(time.perf_counter() - started)
    ms = np.array(times) * 1000
    return {
        "rps": float(len(ms) / ms.sum() * 1000),
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
    }


def build(
    names: list[str], folder: Path, limit_seconds: float = 0.0, repeats: int = 1
) -> tuple[dict[str, str], dict[str, list[dict[str, float]]]]:
    """Builds the named models in a child process (TensorFlow stays out of the harness) and, with
    ``limit_seconds``, measures each in-process limit there ``repeats`` times -> ({name: uri}, {name: [limit]})."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "benchmarks.models", str(folder), str(limit_seconds), str(repeats), *names]
    out = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"building models {names} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["uris"], result["limits"]


if __name__ == "__main__":
    import json
    import sys

    root, seconds, times = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    uris = {name: MAKERS[name](root / name) for name in sys.argv[4:]}
    limits = {
        name: [in_process(uri, FEATURES[name], seconds) for _ in range(times)] if seconds > 0 else []
        for name, uri in uris.items()
    }
    print(json.dumps({"uris": uris, "limits": limits}))
