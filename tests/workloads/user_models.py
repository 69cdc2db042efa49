"""User model functions, as a team would write them in its own package (`entrypoint: module:function`)."""

from __future__ import annotations

from typing import Any


def small_mlp(input_shape: tuple[int, ...], num_outputs: int, width: int = 48, **_: Any) -> Any:
    """A plain tf_keras model; `width` comes from spec.training.hyperparameters."""
    import tf_keras as keras

    inputs = keras.Input(shape=input_shape)
    scaled = keras.layers.Rescaling(1.0 / 16.0)(inputs)  # digits' pixels are 0..16
    hidden = keras.layers.Dense(width, activation="relu")(scaled)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(hidden))


def too_few_outputs(input_shape: tuple[int, ...], num_outputs: int) -> Any:
    """Builds fine, but has 3 outputs for 10 classes: training fails inside the workers."""
    import tf_keras as keras

    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))


def not_a_model(**_: Any) -> Any:
    return "a string, not a model"


def keras3_model(input_shape: tuple[int, ...], num_outputs: int) -> Any:
    import keras  # Keras 3: not usable under MultiWorkerMirroredStrategy

    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(inputs))
