"""How the built-in model is compiled: the spec's ``stepsPerExecution``, or its default for the number of workers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.documents import example
from trainserve.api.trainingjob import MULTI_WORKER_STEPS_PER_EXECUTION, TrainingJobSpec


@pytest.mark.parametrize(
    ("set_to", "workers", "expected"),
    [(None, 1, 1), (None, 2, MULTI_WORKER_STEPS_PER_EXECUTION), (4, 2, 4), (32, 1, 32)],
)
def test_the_model_runs_the_steps_per_call_the_spec_asks_for(set_to: int | None, workers: int, expected: int) -> None:
    from trainserve_workloads.models import build_model, compile_model

    document = example("digits-trainingjob")["spec"]
    document["training"]["stepsPerExecution"] = set_to
    spec = TrainingJobSpec.model_validate(document)
    model = build_model(spec, 64, 10, np.random.default_rng(0).random((8, 64)))
    compile_model(model, spec.training, workers)
    assert int(model._steps_per_execution.numpy()) == expected  # what Keras' train function loops over
