"""How a served model version is called: the fastest way that answers as the SavedModel's signature (TensorFlow
Lite to float32 round-off; TensorFlow's own ways bit for bit)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.workloads.serving_fixtures import publish_digits_model
from trainserve_workloads.serve import lite
from trainserve_workloads.serve.model import LoadedModel, load_model


@pytest.fixture(scope="module")
def digits_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    status = publish_digits_model(tmp_path_factory.mktemp("digits"), epochs=1, seed=3, hidden=[16])
    assert status.uri is not None
    return status.uri


def assert_answers_as_the_signature(model: LoadedModel, *, bit_for_bit: bool) -> None:
    """Real digits (a peaked softmax) and uniform noise, at changing batch sizes (each change resizes a TensorFlow
    Lite interpreter)."""
    from sklearn.datasets import load_digits

    digits = load_digits().data.astype(np.float32)[:40]
    noise = np.random.default_rng(5).random((40, model.n_features), dtype=np.float32)
    for rows in (digits, noise):
        for size in (1, 7, 32, 5, 1, 40):
            answer, expected = model.predict(rows[:size]), model._predict_public(rows[:size])
            if bit_for_bit:
                np.testing.assert_array_equal(answer, expected)
            else:
                assert answer.dtype == expected.dtype == np.float32
                np.testing.assert_allclose(answer, expected, rtol=lite.RELATIVE_TOLERANCE, atol=lite.ABSOLUTE_TOLERANCE)
                assert (answer.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_by_default_a_cpu_replica_runs_a_small_model_on_tensorflow_lite_agreeing_with_the_signature(
    digits_uri: str,
) -> None:
    model = load_model(digits_uri)
    assert model.call_path == "tensorflow lite"
    assert_answers_as_the_signature(model, bit_for_bit=False)


def test_runtime_tensorflow_runs_the_savedmodel_on_the_single_threaded_executor(digits_uri: str) -> None:
    model = load_model(digits_uri, runtime="tensorflow")
    assert model.call_path == "single-threaded executor"
    assert_answers_as_the_signature(model, bit_for_bit=True)


def test_a_larger_model_serves_on_tensorflow_until_a_child_process_has_converted_it(
    digits_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lite, "CONVERT_IN_PROCESS_BYTES", 0)  # every model counts as large
    model = load_model(digits_uri)
    assert model.call_path == "single-threaded executor"  # serving on TensorFlow while the child converts
    deadline = time.monotonic() + 120
    while model.call_path != "tensorflow lite" and time.monotonic() < deadline:
        assert_answers_as_the_signature(model, bit_for_bit=False)  # answers stay right across the switch
        time.sleep(0.2)
    assert model.call_path == "tensorflow lite"
    assert_answers_as_the_signature(model, bit_for_bit=False)


def test_a_model_too_big_to_convert_stays_on_tensorflow(digits_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "MAX_CONVERT_BYTES", 1024)
    model = load_model(digits_uri)
    assert model.call_path == "single-threaded executor"
    assert_answers_as_the_signature(model, bit_for_bit=True)


@pytest.mark.parametrize("in_process_bytes", [lite.CONVERT_IN_PROCESS_BYTES, 0], ids=["in process", "in a child"])
def test_a_model_outside_tensorflow_lites_builtin_ops_stays_on_tensorflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process_bytes: int
) -> None:
    """A signature with an op TensorFlow Lite lacks (a string op here) cannot convert; TensorFlow serves it."""
    monkeypatch.setattr(lite, "CONVERT_IN_PROCESS_BYTES", in_process_bytes)
    import tensorflow as tf

    class Hashing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
        def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            text = tf.strings.as_string(features)
            hashed = tf.strings.to_hash_bucket_fast(text, 1000)
            return {"predictions": tf.cast(hashed, tf.float32) + features}

    module = Hashing()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    assert lite.convert(str(tmp_path)) is None
