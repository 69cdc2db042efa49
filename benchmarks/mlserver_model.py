"""The MLServer baseline's runtime: a custom ``MLModel`` serving the benchmark's SavedModel as a user would write it.

It runs inside MLServer's own venv (``benchmarks.mlserver_baseline``), not ours. Follows MLServer's "Custom
Inference Runtimes" guide (https://docs.seldon.ai/mlserver/user-guide/custom): ``load`` reads the model from
``parameters.uri``, ``predict`` decodes the V2 input with ``NumpyCodec`` and encodes the answer the same way;
MLServer's adaptive batching stacks concurrent requests into one ``predict`` call.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    """The SavedModel's ``serving_default`` signature, one call per (batched) request."""

    async def load(self) -> bool:
        assert self.settings.parameters is not None and self.settings.parameters.uri is not None
        self._signature = tf.saved_model.load(self.settings.parameters.uri).signatures["serving_default"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = self.decode(payload.inputs[0], default_codec=NumpyCodec)
        predictions = self._signature(features=tf.constant(rows, dtype=tf.float32))["predictions"].numpy()
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(name="predictions", payload=predictions)]
        )
