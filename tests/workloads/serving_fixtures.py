"""Models in the training layout, made fast: the training code's own export, on a model fit in-process."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tests.support.documents import example
from trainserve.api.trainingjob import ModelStatus, TrainingJobSpec


def publish_digits_model(
    output: Path, *, epochs: int, seed: int, hidden: list[int], shuffled_labels: bool = False
) -> ModelStatus:
    """Train the built-in mlp on digits in this process (seconds) and publish it as the next version;
    ``shuffled_labels``: on labels shuffled against the images, so it learns nothing that holds."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras as keras

    from trainserve_workloads.datasets import load_dataset
    from trainserve_workloads.models import build_model, compile_model
    from trainserve_workloads.train_loop import RunFacts, publish_model

    document = example("digits-trainingjob")["spec"]
    document["output"]["uri"] = str(output)
    document["training"] |= {"epochs": epochs, "seed": seed}
    document["model"]["builtin"]["hiddenUnits"] = hidden
    spec = TrainingJobSpec.model_validate(document)
    data = load_dataset(spec.dataset, spec.training.loss)
    keras.utils.set_random_seed(seed)
    if shuffled_labels:
        data.y_train = np.random.default_rng(seed).permutation(data.y_train)
    model = build_model(spec, data.n_features, len(data.classes), data.x_train)
    compile_model(model, spec.training)
    history = model.fit(
        data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), epochs=epochs, batch_size=64, verbose=0
    )
    metrics = {k: float(v[-1]) for k, v in history.history.items()}
    return publish_model(model, spec, data, RunFacts({"name": "digits"}, metrics, None, datetime.now(UTC), 1))
