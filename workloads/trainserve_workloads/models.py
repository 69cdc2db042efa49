"""Keras models: the built-in `mlp` and `cnn`, user `entrypoint` functions, and compiling from the spec.

Multi-worker training needs legacy Keras (``tf_keras``), so everything here uses it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tf_keras as keras

from trainserve.api.trainingjob import BuiltinModel, TrainingJobSpec, TrainingSpec

from .datasets import CLASSIFICATION_LOSSES
from .errors import WorkloadError

INPUT_NAME = "features"
OUTPUT_NAME = "predictions"


def output_units(loss: str, n_classes: int) -> tuple[int, str]:
    """Units and activation of the output layer for a loss."""
    if loss in CLASSIFICATION_LOSSES:
        return n_classes, "softmax"
    if loss == "binary_crossentropy":
        return 1, "sigmoid"
    return 1, "linear"


def cnn_input_shape(spec: BuiltinModel, n_features: int) -> list[int]:
    if spec.input_shape:
        shape = list(spec.input_shape)
        if math.prod(shape) != n_features:
            raise WorkloadError(
                "spec.model.builtin.inputShape",
                f"{shape} holds {math.prod(shape)} values but each row has {n_features} features",
                f"use a shape whose product is {n_features}",
            )
        return shape if len(shape) == 3 else [*shape, 1]
    side = math.isqrt(n_features)
    if side * side != n_features:
        raise WorkloadError(
            "spec.model.builtin.inputShape",
            f"{n_features} features do not form a square image",
            "set `inputShape`, e.g. [height, width, channels]",
        )
    return [side, side, 1]


def build_builtin(spec: BuiltinModel, n_features: int, units: int, activation: str, x_train: np.ndarray) -> keras.Model:
    """The built-in model; its normalisation layer learns the training data's statistics."""
    inputs = keras.Input(shape=(n_features,), name=INPUT_NAME)
    hidden = inputs
    if spec.normalize:
        # The statistics `adapt` learns, from the arrays at once: `adapt` runs a dataset pass, under a distribution
        # strategy a collective one per batch.
        mean, variance = x_train.mean(axis=0), x_train.var(axis=0)
        normalization = keras.layers.Normalization(mean=mean, variance=variance, name="normalize")
        hidden = normalization(hidden)
    if spec.name == "cnn":
        hidden = keras.layers.Reshape(cnn_input_shape(spec, n_features))(hidden)
        for filters in spec.filters:
            hidden = keras.layers.Conv2D(filters, spec.kernel_size, padding="same", activation=spec.activation)(hidden)
            if hidden.shape[1] >= 2 and hidden.shape[2] >= 2:
                hidden = keras.layers.MaxPooling2D(2)(hidden)
        hidden = keras.layers.Flatten()(hidden)
    for width in spec.hidden_units:
        hidden = keras.layers.Dense(width, activation=spec.activation)(hidden)
        if spec.dropout > 0:
            hidden = keras.layers.Dropout(spec.dropout)(hidden)
    # float32 outputs under a mixed precision policy too: a softmax in 16 bits loses the small probabilities.
    outputs = keras.layers.Dense(units, activation=activation, name=OUTPUT_NAME, dtype="float32")(hidden)
    return keras.Model(inputs, outputs, name=f"trainserve_{spec.name}")


def load_entrypoint(entrypoint: str) -> Callable[..., Any]:
    """The user's model function; a clear error when it cannot be imported."""
    module_name, _, function_name = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # an import can fail in any way the user's code does
        raise WorkloadError(
            "spec.model.entrypoint",
            f"cannot import module {module_name!r}: {type(err).__name__}: {err}",
            "make the module importable in the workload image (installed, or on PYTHONPATH)",
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise WorkloadError(
            "spec.model.entrypoint",
            f"module {module_name!r} has no function {function_name!r}",
            "name a function defined in that module",
        )
    return function  # type: ignore[no-any-return]


def build_entrypoint(entrypoint: str, hyperparameters: dict[str, Any], n_features: int, units: int) -> keras.Model:
    """Call the user's function with the hyperparameters (plus `input_shape`/`num_outputs` if it takes them)."""
    function = load_entrypoint(entrypoint)
    arguments = dict(hyperparameters)
    accepted = inspect.signature(function).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for name, value in (("input_shape", (n_features,)), ("num_outputs", units)):
        if name in accepted or takes_any:
            arguments.setdefault(name, value)
    try:
        model = function(**arguments)
    except Exception as err:
        raise WorkloadError(
            "spec.model.entrypoint",
            f"{entrypoint} raised {type(err).__name__}: {err}",
            "fix the function, or the hyperparameters it receives (spec.training.hyperparameters)",
        ) from None
    if not isinstance(model, keras.Model):
        hint = (
            "it returned a Keras 3 model; build it with `import tf_keras as keras` (multi-worker training needs legacy Keras)"
            if type(model).__module__.startswith("keras")
            else f"it returned {type(model).__name__}"
        )
        raise WorkloadError(
            "spec.model.entrypoint", f"{entrypoint} did not return a tf_keras Model: {hint}", "return a tf_keras.Model"
        )
    return model


def build_model(spec: TrainingJobSpec, n_features: int, n_classes: int, x_train: np.ndarray) -> keras.Model:
    units, activation = output_units(spec.training.loss, n_classes)
    if spec.model.builtin is not None:
        return build_builtin(spec.model.builtin, n_features, units, activation, x_train)
    assert spec.model.entrypoint is not None
    return build_entrypoint(spec.model.entrypoint, spec.training.hyperparameters, n_features, units)


_OPTIMIZERS: dict[str, Callable[[float], keras.optimizers.Optimizer]] = {
    "adam": lambda lr: keras.optimizers.Adam(learning_rate=lr),
    "adamw": lambda lr: keras.optimizers.AdamW(learning_rate=lr),
    "sgd": lambda lr: keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
    "rmsprop": lambda lr: keras.optimizers.RMSprop(learning_rate=lr),
    "adagrad": lambda lr: keras.optimizers.Adagrad(learning_rate=lr),
    "nadam": lambda lr: keras.optimizers.Nadam(learning_rate=lr),
}


def compile_model(model: keras.Model, training: TrainingSpec, workers: int = 1) -> None:
    """Compile with the spec's optimizer, loss, metrics and steps per call (call inside the strategy scope)."""
    metrics: list[Any] = []
    for name in training.metrics:
        if name == "auc":
            metrics.append(keras.metrics.AUC(name="auc"))
        elif name == "precision":
            metrics.append(keras.metrics.Precision(name="precision"))
        elif name == "recall":
            metrics.append(keras.metrics.Recall(name="recall"))
        else:
            metrics.append(name)
    model.compile(
        optimizer=_OPTIMIZERS[training.optimizer.name](training.optimizer.learning_rate),
        loss=training.loss,
        metrics=metrics,
        steps_per_execution=training.steps_per_call(workers),
    )
    if workers > 1:
        # Each metric's result is already summed over the workers (tf-keras' result_wrapper); Keras' default for
        # several workers all-reduces every step's logs once more (docs/performance.md, "Two workers without Ray").
        model.distribute_reduction_method = "first"
