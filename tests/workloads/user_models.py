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


def fails_in_the_first_training_attempt(
    input_shape: tuple[int, ...], num_outputs: int, marker_dir: str, **_: Any
) -> Any:
    """A model whose first training attempt fails after it started (as on a lost node): each build leaves a marker
    (the driver's preflight builds it once), and the train step of the second build raises as it is traced."""
    from pathlib import Path

    import tf_keras as keras

    builds = len(list(Path(marker_dir).iterdir())) + 1
    Path(marker_dir, f"build-{builds}").write_text("")

    class Flaky(keras.Model):  # type: ignore[misc]
        def train_step(self, data: Any) -> Any:
            if builds == 2:
                raise RuntimeError("the node running this attempt went away")
            return super().train_step(data)

    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Rescaling(1.0 / 16.0)(inputs))
    return Flaky(inputs, keras.layers.Dense(num_outputs, activation="softmax")(hidden))
