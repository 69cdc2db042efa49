"""How a served model version is called: the fastest way that answers exactly as the SavedModel's signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.workloads.serving_fixtures import publish_digits_model
from trainserve_workloads.serve.model import load_model


def test_a_cpu_replica_runs_the_model_on_the_single_threaded_executor_with_the_signatures_answers(
    tmp_path: Path,
) -> None:
    status = publish_digits_model(tmp_path / "digits", epochs=1, seed=3, hidden=[16])
    assert status.uri is not None
    model = load_model(status.uri)
    assert model.call_path == "single-threaded executor"
    rows = np.random.default_rng(5).random((7, model.n_features), dtype=np.float32)
    for batch in (rows[:1], rows):
        np.testing.assert_array_equal(model.predict(batch), model._predict_public(batch))
