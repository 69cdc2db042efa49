"""A served model version: its serving signature (or the same model on TensorFlow Lite), and its card."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import modelstore
from .lite_choice import (
    CONVERTING,
    FAILED,
    KEPT_TENSORFLOW,
    LITE_MS,
    NOT_CONVERTIBLE,
    OFF,
    SWITCHED,
    TENSORFLOW_MS,
    LiteDecision,
    ThreadChoice,
    decide,
    several_threads_pay,
    time_interleaved,
    timed_batches,
)
from .protocol import TensorSpec

if TYPE_CHECKING:
    from .lite import Converted, LiteCall

SINGLE_THREADED_EXECUTOR = "SINGLE_THREADED_EXECUTOR"
Probe = tuple[np.ndarray, np.ndarray]  # rows, and the public signature's answer to them
RUNTIME_TENSORFLOW = LiteDecision(OFF, "runtime: tensorflow")
log = logging.getLogger(__name__)


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

    _fast_call: Any = None  # rows -> outputs, faster than the signature (_pick_fastest_call, try_lite)
    call_path: str = "signature"  # how predict calls the model
    lite: LiteDecision = RUNTIME_TENSORFLOW  # the move to TensorFlow Lite (try_lite)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """One call of the model (the ``serving_default`` signature, or the fastest equivalent) for all rows."""
        if self._fast_call is not None:
            return np.asarray(self._fast_call(rows))
        return self._predict_public(rows)

    def _predict_public(self, rows: np.ndarray) -> np.ndarray:
        result = self._signature(**{self.inputs[0].name: self._tf.constant(rows)})
        return np.asarray(result[self.outputs[0].name].numpy())

    def _pick_fastest_call(self, probes: list[Probe]) -> None:
        """Use the fastest TensorFlow way to call the model that answers the probes bit for bit as the public
        signature does (``try_lite`` may then move the model to TensorFlow Lite).

        - The signature's graph function on TensorFlow's single-threaded executor: the ops run in the calling
          thread instead of being handed to pool threads. That executor refuses some graphs (v1 control flow,
          asynchronous kernels), so it is not tried with a GPU.
        - The graph function without the structured-argument layer, a good part of a small model's call.
          ``call_flat`` is TensorFlow's internal API.
        - Else the public signature.

        Figures: docs/performance.md#serving-how-the-model-is-called.
        """
        inference = getattr(self._signature, "_inference_function", None)
        captured = list(getattr(self._signature, "captured_inputs", []))
        if inference is None or not hasattr(inference, "call_flat") or len(self.outputs) != 1:
            return
        tf = self._tf

        def flat(rows: np.ndarray) -> Any:
            return inference.call_flat(tf.constant(rows), *captured)[0].numpy()

        def single_threaded(rows: np.ndarray) -> Any:
            with tf.experimental.function_executor_type(SINGLE_THREADED_EXECUTOR):
                return flat(rows)

        ways = (
            [("flat call", flat)]
            if self.on_gpu
            else [("single-threaded executor", single_threaded), ("flat call", flat)]
        )
        for name, call in ways:
            if self._answers(call, probes, np.array_equal):
                self._fast_call, self.call_path = call, name
                return

    @property
    def on_gpu(self) -> bool:
        return bool(self._tf.config.list_logical_devices("GPU"))

    def _answers(self, call: Any, probes: list[Probe], alike: Any) -> bool:
        try:
            return all(alike(np.asarray(call(rows)), expected) for rows, expected in probes)
        except Exception:
            return False

    def try_lite(
        self, saved_model_dir: str, probes: list[Probe], started: float, remove_after: str | None = None
    ) -> None:
        """Move the model to TensorFlow Lite (``lite.convert``) if that is faster and agrees with the signature;
        ``self.lite`` says what happened and why, and one log line too.

        A small model's call then costs a fraction of TensorFlow's (figures:
        docs/performance.md#serving-tensorflow-lite). TensorFlow Lite's kernels round differently in the last
        bits, so it must agree to float32 round-off (``lite.agrees``), not bit for bit, and be faster than the
        TensorFlow call (``lite_choice.decide``). Safe to run while the model serves: ``predict`` switches with one
        assignment. ``started``: ``time.monotonic()`` at the start of the load. ``remove_after``: a downloaded
        model folder to delete when done.
        """
        try:
            self.lite = self._lite_decision(saved_model_dir, probes, started)
        except Exception as err:  # never let the background thread die silently
            self.lite = LiteDecision(FAILED, f"{type(err).__name__}: {err}", time.monotonic() - started)
        finally:
            if remove_after:
                shutil.rmtree(remove_after, ignore_errors=True)
        decision = self.lite
        (log.warning if decision.state == FAILED else log.info)(
            "model %s: TensorFlow Lite %s after %.1f s: %s", self.uri, decision.state, decision.seconds, decision.reason
        )

    def _lite_decision(self, saved_model_dir: str, probes: list[Probe], started: float) -> LiteDecision:
        from . import lite

        try:
            converted = lite.convert(saved_model_dir)
            call = converted.call(1)
            if not self._answers(call, probes, lite.agrees):
                reason = "its answers differ from the signature's by more than float32 round-off"
                return LiteDecision(KEPT_TENSORFLOW, reason, time.monotonic() - started)
            batches = timed_batches(self.n_features)
            call, threads = self._lite_threads(converted, call, probes, batches, lite.pool_threads())
        except lite.NotConvertible as err:
            return LiteDecision(NOT_CONVERTIBLE, str(err), time.monotonic() - started)
        except lite.ConversionFailed as err:
            return LiteDecision(FAILED, str(err), time.monotonic() - started)
        timings = time_interleaved({LITE_MS: call, TENSORFLOW_MS: self.predict}, batches)
        decision = decide(timings, time.monotonic() - started, threads)
        if decision.state == SWITCHED:
            self._fast_call, self.call_path = call, "tensorflow lite"
        return decision

    def _lite_threads(
        self, converted: Converted, single: LiteCall, probes: list[Probe], batches: list[np.ndarray], pool: int
    ) -> tuple[LiteCall, ThreadChoice]:
        """The interpreter of one thread, or of the CPU share's ``pool`` threads where that pays
        (``lite_choice.several_threads_pay``): a large model's call shortens with more threads, a small one's
        does not, and its idle threads then spin on cores the replica needs for everything else."""
        if pool <= 1:
            return single, ThreadChoice(1)
        from . import lite

        several = converted.call(pool)
        one_key, several_key = "1", str(pool)
        timings = time_interleaved({one_key: single, several_key: several}, batches)
        if several_threads_pay(timings, one_key, several_key) and self._answers(several, probes, lite.agrees):
            return several, ThreadChoice(pool, timings)
        return single, ThreadChoice(1, timings)


def _median_seconds(call: Any, rows: np.ndarray, times: int = 9) -> float:
    call(rows)
    timings = []
    for _ in range(times):
        started = time.perf_counter()
        call(rows)
        timings.append(time.perf_counter() - started)
    return sorted(timings)[times // 2]


def _specs(entries: list[dict[str, Any]]) -> list[TensorSpec]:
    return [TensorSpec(e["name"], e["datatype"], list(e["shape"])) for e in entries]


def load_model(uri: str, runtime: str = "auto", version: int | None = None) -> LoadedModel:
    """Load a version folder (or the newest version under an output folder), downloading it if remote.

    ``version``: the number to answer with, when the operator knows it (a model registry's own numbering);
    default the model card's.

    ``runtime``: ``auto`` may run the model on TensorFlow Lite (``LoadedModel.try_lite``): small models are
    converted before this returns, larger ones in the background while TensorFlow serves them; ``tensorflow``
    always runs the SavedModel itself.
    """
    started = time.monotonic()
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
        signature = saved.signatures["serving_default"]
        model = LoadedModel(
            uri=location.uri,
            version=card.get("version") if version is None else version,
            card=card,
            inputs=_specs(card["signature"]["inputs"]),
            outputs=_specs(card["signature"]["outputs"]),
            _signature=signature,
            _tf=tf,
            _saved=saved,
        )
        row = np.zeros((1, model.n_features), dtype=np.float32)
        model.predict(row)  # warm-up: the first call builds the graph
        random = np.random.default_rng(0)
        inputs = [  # small and large inputs: a saturated softmax rounds differently from a flat one
            random.random((1, model.n_features), dtype=np.float32),
            random.random((3, model.n_features), dtype=np.float32),
            (random.standard_normal((32, model.n_features)) * 10).astype(np.float32),
        ]
        probes = [(rows, model._predict_public(rows)) for rows in inputs]
        model._pick_fastest_call(probes)
        if runtime == "auto":
            temporary = _start_lite(model, local_dir, probes, started, temporary)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    model.single_row_seconds = _median_seconds(model.predict, row, times=5)
    return model


def _start_lite(
    model: LoadedModel, local_dir: str, probes: list[Probe], started: float, temporary: str | None
) -> str | None:
    """Small models move to TensorFlow Lite before the load returns, larger ones in the background while TensorFlow
    serves them (the thread then owns ``temporary``, the downloaded folder: returns what the caller still removes)."""
    from . import lite

    if model.on_gpu or len(model.outputs) != 1:
        reason = "the model runs on a GPU" if model.on_gpu else "the model has more than one output"
        model.lite = LiteDecision(NOT_CONVERTIBLE, reason, time.monotonic() - started)
        return temporary
    if lite.converts_in_process(local_dir):
        model.try_lite(local_dir, probes, started)
        return temporary
    model.lite = LiteDecision(CONVERTING, "converting in a child process; TensorFlow serves meanwhile")
    thread = threading.Thread(target=model.try_lite, args=(local_dir, probes, started, temporary), daemon=True)
    thread.start()
    return None
