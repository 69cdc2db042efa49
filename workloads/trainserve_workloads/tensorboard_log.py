"""TensorBoard event files of a run, written by the chief: ``<output.uri>/tensorboard/<attempt>/{train,validation}``.

The step of every scalar is the absolute epoch (1-based), so an attempt that resumes continues the curves of the one
before it. TensorFlow writes event files to local paths only (remote file systems need tensorflow-io): a remote
logdir is written to a local folder and uploaded after every epoch.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from trainserve.api.storage import tensorboard_logdir

from .storage import Location, locate

log = logging.getLogger("trainserve.tensorboard")

VALIDATION_PREFIX = "val_"


class TensorBoardLog:
    """Per-epoch scalars (training and validation side by side, as Keras' callback lays them out) and the graph."""

    def __init__(self, output_uri: str, attempt: int):
        self.location: Location = locate(tensorboard_logdir(output_uri)).child(str(attempt))
        self.local_dir = self.location.path if self.location.is_local else tempfile.mkdtemp(prefix="trainserve-tb-")
        self._writers: tuple[Any, Any] | None = None

    @property
    def writers(self) -> tuple[Any, Any]:
        """(train, validation), made at first use: MultiWorkerMirroredStrategy must start before any TensorFlow op."""
        if self._writers is None:
            self._writers = tuple(
                tf.summary.create_file_writer(os.path.join(self.local_dir, side)) for side in ("train", "validation")
            )
        return self._writers

    def graph(self, model: Any, n_features: int) -> None:
        """The model's forward pass as a graph (TensorBoard's Graphs tab)."""
        try:
            forward = tf.function(lambda features: model(features, training=False))
            concrete = forward.get_concrete_function(tf.TensorSpec([None, n_features], tf.float32))
            with self.writers[0].as_default():
                tf.summary.graph(concrete.graph)
        except Exception as err:  # a graph is a nicety: never fail a run over it
            log.warning("could not write the model graph to TensorBoard: %s", err)

    def epoch(
        self, step: int, metrics: dict[str, float], learning_rate: float | None, samples_per_second: float
    ) -> None:
        train, validation = self.writers
        with train.as_default(step=step):
            for name, value in metrics.items():
                if not name.startswith(VALIDATION_PREFIX):
                    tf.summary.scalar(name, value)
            if learning_rate is not None:
                tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("samples_per_second", samples_per_second)
        with validation.as_default(step=step):
            for name, value in metrics.items():
                if name.startswith(VALIDATION_PREFIX):
                    tf.summary.scalar(name.removeprefix(VALIDATION_PREFIX), value)
        self._flush()

    def _flush(self) -> None:
        for writer in self._writers or ():
            writer.flush()
        if not self.location.is_local:
            try:
                self.location.upload_dir(self.local_dir)
            except OSError as err:  # the next epoch uploads everything again
                log.warning("could not upload TensorBoard events to %s: %s", self.location.uri, err)

    def close(self) -> None:
        self._flush()
        for writer in self._writers or ():
            writer.close()
        if not self.location.is_local:
            shutil.rmtree(self.local_dir, ignore_errors=True)
