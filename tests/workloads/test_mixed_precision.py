"""`training.mixedPrecision: true`: the built-in model computes in 16 bits, learns, and exports float32 outputs.

Runs in its own Python process: Keras' precision policy is global to the process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.documents import example
from tests.workloads.conftest import cli_env

PROBE = """
import json, sys, tempfile
import tensorflow as tf, tf_keras as keras
from trainserve.api.trainingjob import TrainingJobSpec
from trainserve_workloads.datasets import load_dataset
from trainserve_workloads.models import INPUT_NAME, OUTPUT_NAME, build_model, compile_model
from trainserve_workloads.train_loop import _export, _mixed_policy
spec = TrainingJobSpec.model_validate(json.loads(sys.argv[1]))
keras.mixed_precision.set_global_policy(_mixed_policy())
data = load_dataset(spec.dataset, spec.training.loss)
model = build_model(spec, data.n_features, len(data.classes), data.x_train)
compile_model(model, spec.training)
history = model.fit(data.x_train, data.y_train, batch_size=64, epochs=4, validation_data=(data.x_val, data.y_val),
                    verbose=0)
folder = tempfile.mkdtemp()
_export(model, data.n_features, folder)
served = tf.saved_model.load(folder).signatures["serving_default"](**{INPUT_NAME: tf.constant(data.x_val[:3])})
print(json.dumps({"policy": keras.mixed_precision.global_policy().name,
                  "hidden": model.layers[2].compute_dtype, "val_accuracy": history.history["val_accuracy"][-1],
                  "output": served[OUTPUT_NAME].dtype.name}))
"""


def test_mixed_precision_trains_in_16_bits_and_serves_float32() -> None:
    spec = example("digits-trainingjob")["spec"] | {"resources": {"workers": 1}}
    spec["training"]["mixedPrecision"] = True
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(spec)], capture_output=True, text=True, env=cli_env({}), timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["policy"] == "mixed_bfloat16" and result["hidden"] == "bfloat16"  # no GPU here
    assert result["val_accuracy"] > 0.9
    assert result["output"] == "float32"
