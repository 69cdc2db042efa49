"""How a served model version is called: the fastest way that answers as the SavedModel's signature (TensorFlow
Lite to float32 round-off; TensorFlow's own ways bit for bit)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.workloads.serving_fixtures import publish_digits_model
from trainserve_workloads.serve import lite, lite_choice, telemetry
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


def wait_for_decision(model: LoadedModel, timeout: float = 120) -> None:
    """Until the background move to TensorFlow Lite decided; answers stay right meanwhile."""
    deadline = time.monotonic() + timeout
    while model.lite.state == lite_choice.CONVERTING and time.monotonic() < deadline:
        assert_answers_as_the_signature(model, bit_for_bit=False)  # it may switch in the middle
        time.sleep(0.2)


def reported(model: LoadedModel) -> dict[str, Any]:
    """What ``/v2/models/NAME/stats`` says about the version (``roles.primary.lite``)."""
    return telemetry.roles(Slot(model, "v1"), None, {}, 0)["primary"]["lite"]


@dataclass
class Slot:
    model: LoadedModel
    version_label: str


def test_a_larger_model_serves_on_tensorflow_until_a_child_process_has_converted_it(
    digits_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lite, "CONVERT_IN_PROCESS_BYTES", 0)  # every model counts as large
    model = load_model(digits_uri)
    assert model.call_path == "single-threaded executor"  # serving on TensorFlow while the child converts
    assert reported(model)["state"] == "converting"
    wait_for_decision(model)
    assert model.call_path == "tensorflow lite"
    assert_answers_as_the_signature(model, bit_for_bit=False)
    stats = reported(model)
    assert stats["state"] == "switched" and "faster at 1 row, 32 rows" in stats["reason"]
    assert 0 < stats["seconds"] < 120
    for size in ("1 row", "32 rows"):
        assert 0 < stats["timings"][size]["tensorflowLiteMs"] < stats["timings"][size]["tensorflowMs"]


def test_a_conversion_that_takes_too_long_is_stopped_and_reported(
    digits_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lite, "CONVERT_IN_PROCESS_BYTES", 0)
    monkeypatch.setattr(lite, "CONVERT_TIMEOUT_S", 0.5)  # the child's TensorFlow import alone takes longer
    model = load_model(digits_uri)
    wait_for_decision(model)
    stats = reported(model)
    assert stats["state"] == "failed" and stats["reason"] == "the conversion took longer than 0.5 s and was stopped"
    assert model.call_path == "single-threaded executor"
    assert_answers_as_the_signature(model, bit_for_bit=True)


def test_a_model_too_big_to_convert_stays_on_tensorflow(digits_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "MAX_CONVERT_BYTES", 1024)
    model = load_model(digits_uri)
    assert model.call_path == "single-threaded executor"
    assert_answers_as_the_signature(model, bit_for_bit=True)
    stats = reported(model)
    assert stats["state"] == "not_convertible" and "more than the 1024 converted" in stats["reason"]


def test_runtime_tensorflow_reports_that_lite_is_off(digits_uri: str) -> None:
    assert reported(load_model(digits_uri, runtime="tensorflow")) == {
        "state": "off",
        "reason": "runtime: tensorflow",
        "seconds": None,
        "timings": {},
    }


@pytest.mark.parametrize("in_process_bytes", [lite.CONVERT_IN_PROCESS_BYTES, 0], ids=["in process", "in a child"])
def test_a_model_outside_tensorflow_lites_builtin_ops_stays_on_tensorflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process_bytes: int
) -> None:
    """A signature with an op TensorFlow Lite lacks (a string op here) cannot convert; the converter says why."""
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
    reason = "ops outside TensorFlow Lite's builtins: tf.AsString, tf.StringToHashBucketFast"
    with pytest.raises(lite.NotConvertible, match=f"^{reason}$"):
        lite.convert(str(tmp_path))


def test_lite_is_kept_off_when_it_is_slower_at_any_timed_size() -> None:
    timings = {
        "1 row": {"tensorflowLiteMs": 0.5, "tensorflowMs": 2.0},
        "32 rows": {"tensorflowLiteMs": 9.0, "tensorflowMs": 8.0},
    }
    decision = lite_choice.decide(timings, seconds=3.0)
    assert decision.state == "kept_tensorflow" and "not faster at 32 rows" in decision.reason
    timings["32 rows"]["tensorflowLiteMs"] = 7.0
    assert lite_choice.decide(timings, seconds=3.0).state == "switched"


def test_interleaved_timing_keeps_the_fastest_call_of_each_way() -> None:
    def slow(rows: np.ndarray) -> np.ndarray:
        time.sleep(0.004)
        return rows

    def fast(rows: np.ndarray) -> np.ndarray:
        return rows

    timings = lite_choice.time_interleaved({"fast": fast, "slow": slow}, [np.zeros((2, 3), np.float32)], rounds=4)
    assert list(timings) == ["2 rows"]
    assert timings["2 rows"]["fast"] < 1.0 <= 4.0 <= timings["2 rows"]["slow"]


def test_interleaved_timing_does_not_time_a_call_slowed_by_the_other_way_just_before() -> None:
    """A call right after the other way's is slower (that way's pool threads still spin): here, slow whenever
    either of the two calls before it was the other way's. The timing reports each way's own speed."""
    history: list[str] = []

    def way(name: str, other: str) -> Any:
        def call(rows: np.ndarray) -> np.ndarray:
            time.sleep(0.004 if other in history[-2:] else 0.0005)
            history.append(name)
            return rows

        return call

    timings = lite_choice.time_interleaved({"a": way("a", "b"), "b": way("b", "a")}, [np.zeros((1, 3), np.float32)])
    assert timings["1 row"]["a"] < 4.0 and timings["1 row"]["b"] < 4.0


def test_several_interpreter_threads_are_used_only_where_they_are_much_faster_at_every_size() -> None:
    timings = {"1 row": {"1": 4.0, "2": 1.6}, "32 rows": {"1": 30.0, "2": 16.0}}
    assert lite_choice.several_threads_pay(timings, "1", "2")
    timings["1 row"]["2"] = 3.5  # 12% faster at one row: the spinning threads would cost more
    assert not lite_choice.several_threads_pay(timings, "1", "2")


def test_a_small_model_runs_on_one_interpreter_thread_whatever_the_cpu_share(
    digits_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads cannot shorten a call of microseconds; the replica's CPU share (2 here) is not a reason to use
    them, and the stats say which was timed against which."""
    monkeypatch.setattr(lite, "pool_threads", lambda: 2)
    model = load_model(digits_uri)
    assert model.call_path == "tensorflow lite" and model._fast_call.threads == 1
    stats = reported(model)
    assert stats["threads"]["chosen"] == 1 and stats["reason"].endswith("; 1 interpreter thread")
    assert set(stats["threads"]["timings"]) == {"1 row", "32 rows"}
    assert all(set(t) == {"1", "2"} and min(t.values()) > 0 for t in stats["threads"]["timings"].values())


def test_an_interpreter_of_several_threads_is_used_where_it_pays_and_answers_as_the_signature(
    digits_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lite, "pool_threads", lambda: 2)
    monkeypatch.setattr(lite_choice, "SEVERAL_THREADS_GAIN", -100.0)  # any several-thread timing counts as faster
    model = load_model(digits_uri)
    assert model.call_path == "tensorflow lite" and model._fast_call.threads == 2
    assert reported(model)["threads"]["chosen"] == 2
    assert_answers_as_the_signature(model, bit_for_bit=False)
