"""A served model version: the SavedModel's serving signature called in graph mode, and its card."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import modelstore
from .protocol import TensorSpec


@dataclass
class LoadedModel:
    """One model version, ready to predict a batch of rows."""

    uri: str
    version: int | None
    card: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    _signature: Any
    _tf: Any
    _saved: Any  # the loaded SavedModel; keeps the signature's variables alive
    single_row_seconds: float = 0.0  # measured at load

    @property
    def n_features(self) -> int:
        return self.inputs[0].shape[-1]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """One graph-mode call of the ``serving_default`` signature for all rows."""
        result = self._signature(**{self.inputs[0].name: self._tf.constant(rows)})
        return np.asarray(result[self.outputs[0].name].numpy())


def _specs(entries: list[dict[str, Any]]) -> list[TensorSpec]:
    return [TensorSpec(e["name"], e["datatype"], list(e["shape"])) for e in entries]


def load_model(uri: str) -> LoadedModel:
    """Load a version folder (or the newest version under an output folder), downloading it if remote."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    location, card = modelstore.resolve(uri)
    local_dir = location.path
    temporary = None
    if not location.is_local:
        temporary = tempfile.mkdtemp(prefix="trainserve-model-")
        location.download_dir(temporary)
        local_dir = temporary
    try:
        saved = tf.saved_model.load(local_dir)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    signature = saved.signatures["serving_default"]
    model = LoadedModel(
        uri=location.uri,
        version=card.get("version"),
        card=card,
        inputs=_specs(card["signature"]["inputs"]),
        outputs=_specs(card["signature"]["outputs"]),
        _signature=signature,
        _tf=tf,
        _saved=saved,
    )
    row = np.zeros((1, model.n_features), dtype=np.float32)
    model.predict(row)  # warm-up: the first call builds the graph
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        model.predict(row)
        timings.append(time.perf_counter() - started)
    model.single_row_seconds = sorted(timings)[len(timings) // 2]
    return model
