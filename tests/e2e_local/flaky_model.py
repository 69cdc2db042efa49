"""A user model (``spec.model.entrypoint``) whose first run fails mid-training, after its first checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fails_once(input_shape: tuple[int, ...], num_outputs: int, marker: str, failAtStep: int, **_: Any) -> Any:
    """A small MLP whose training raises at optimizer step ``failAtStep`` unless ``marker`` exists (it is written
    when it raises), so the first attempt fails and a retry of the same spec trains through."""
    import tensorflow as tf
    import tf_keras as keras

    def maybe_fail(step: Any) -> None:
        if int(step) >= failAtStep and not Path(marker).exists():
            Path(marker).write_text(str(int(step)))
            raise RuntimeError(f"injected failure at step {int(step)}")

    class FailsOnce(keras.Model):  # type: ignore[misc]
        def train_step(self, data: Any) -> Any:
            tf.py_function(maybe_fail, [self.optimizer.iterations], [])
            return super().train_step(data)

    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Rescaling(1.0 / 16.0)(inputs))
    return FailsOnce(inputs, keras.layers.Dense(num_outputs, activation="softmax")(hidden))
