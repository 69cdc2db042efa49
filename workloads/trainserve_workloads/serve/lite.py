"""A SavedModel converted to TensorFlow Lite, called on the CPU.

A small model's TensorFlow call is mostly fixed per-call cost, which the TensorFlow Lite interpreter with the same
float32 weights mostly avoids (figures: docs/performance.md#serving-tensorflow-lite); the answers differ by
round-off only. The conversion is TensorFlow's own (``tf.lite.TFLiteConverter``, builtin ops only, no
quantization); ``model.LoadedModel`` uses it only where it agrees with the signature to float32 round-off and is
faster (``lite_choice``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

#: Largest SavedModel (all its files) worth converting: the converter holds the model twice while it works and
#: the interpreter keeps its own packed copy of the weights, so big models would double a replica's memory for a
#: gain that shrinks as compute grows.
MAX_CONVERT_BYTES = 256 * 1024 * 1024

#: How closely TensorFlow Lite must agree with the signature: above the float32 round-off of differently ordered
#: kernels, far from a changed answer (measured differences: docs/performance.md#serving-tensorflow-lite).
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_TOLERANCE = 1e-6


def agrees(answer: np.ndarray, expected: np.ndarray) -> bool:
    """Same shape and dtype, and every value equal to float32 round-off (NaN where the signature gives NaN)."""
    return (
        answer.shape == expected.shape
        and answer.dtype == expected.dtype
        and bool(np.allclose(answer, expected, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE, equal_nan=True))
    )


#: SavedModels above this size are converted in a child process: the converter leaves memory behind in the process
#: that runs it. The child imports TensorFlow again, which takes seconds, so ``model.load_model`` runs it in the
#: background (figures: docs/performance.md#converting-in-the-replica-or-in-a-child-process).
CONVERT_IN_PROCESS_BYTES = 16 * 1024 * 1024
#: How long the child may take; then it is stopped and TensorFlow keeps serving (``ConversionFailed``).
CONVERT_TIMEOUT_S = 300.0


class NotConvertible(Exception):
    """The model cannot run on TensorFlow Lite (too big, ops outside the builtins, not float32 in and out)."""


class ConversionFailed(Exception):
    """The conversion did not finish: it timed out, or the child process died."""


def _convert_here(saved_model_dir: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return bytes(converter.convert())


def _convert_in_child(saved_model_dir: str) -> bytes:
    """``python -m trainserve_workloads.serve.lite SAVED_MODEL OUT``; its memory goes back when it exits."""
    with tempfile.TemporaryDirectory(prefix="trainserve-lite-") as folder:
        out = Path(folder) / "model.tflite"
        try:
            done = subprocess.run(
                [sys.executable, "-m", __name__, saved_model_dir, str(out)],
                capture_output=True,
                text=True,
                timeout=CONVERT_TIMEOUT_S,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
        except subprocess.TimeoutExpired:
            raise ConversionFailed(f"the conversion took longer than {CONVERT_TIMEOUT_S:g} s and was stopped") from None
        if done.returncode < 0:
            raise ConversionFailed(f"the converter process was killed by signal {-done.returncode}")
        if done.returncode != 0:
            raise NotConvertible(_reason(done.stderr) or f"the converter exited with {done.returncode}")
        return out.read_bytes()


_UNSUPPORTED_OP = re.compile(r"'(tf\.\w+)' op is neither a custom op nor a flex op")


def _reason(converter_output: str) -> str:
    """The ops outside TensorFlow Lite's builtins, else the converter's error line (it prints pages)."""
    ops = sorted(set(_UNSUPPORTED_OP.findall(converter_output)))
    if ops:
        return f"ops outside TensorFlow Lite's builtins: {', '.join(ops)}"
    lines = [line.strip() for line in converter_output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]] or lines[-1:]
    return errors[-1][:300] if errors else ""


def _size(directory: str) -> int:
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


def converts_in_process(saved_model_dir: str) -> bool:
    """Whether ``convert`` converts this model in the calling process (quickly), not in a child."""
    return _size(saved_model_dir) <= CONVERT_IN_PROCESS_BYTES


class LiteCall:
    """Calls a converted model on a batch of rows; the interpreter is resized when the batch size changes.

    An interpreter runs one call at a time, hence the lock (uncontended: a replica's batcher runs one batch at a
    time per model). The interpreter releases the GIL while it computes.
    """

    def __init__(self, interpreter: Any, threads: int):
        self._interpreter = interpreter
        self.threads = threads
        self._input = interpreter.get_input_details()[0]["index"]
        self._output = interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        with self._lock:
            if rows.shape != self._shape:
                self._interpreter.resize_tensor_input(self._input, rows.shape)
                self._interpreter.allocate_tensors()
                self._shape = rows.shape
            self._interpreter.set_tensor(self._input, rows)
            self._interpreter.invoke()
            return np.asarray(self._interpreter.get_tensor(self._output))  # a copy, safe to hand out


class Converted:
    """A SavedModel's ``serving_default`` signature as a TensorFlow Lite model, ready to call with any number of
    interpreter threads (each call made by :meth:`call` packs its own copy of the weights)."""

    def __init__(self, content: bytes):
        self._content = content

    def call(self, threads: int) -> LiteCall:
        """A call on an interpreter of ``threads`` threads; ``NotConvertible`` when the model does not map one
        float32 tensor to another, or this TensorFlow cannot run TensorFlow Lite."""
        import tensorflow as tf

        try:
            with warnings.catch_warnings():  # it warns that it moves to the LiteRT package; a TensorFlow without it
                warnings.simplefilter("ignore")  # fails here, and TensorFlow serves the model
                interpreter = tf.lite.Interpreter(model_content=self._content, num_threads=threads)
        except Exception as err:
            raise NotConvertible(_reason(str(err)) or repr(err)) from err
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1 or any(d["dtype"] != np.float32 for d in inputs + outputs):
            raise NotConvertible("the model does not map one float32 tensor to another")
        return LiteCall(interpreter, threads)


def pool_threads() -> int:
    """The threads TensorFlow's intra-op pool has (``tf_threads.size_thread_pools`` sizes it to the replica's CPU
    share; unsized, TensorFlow takes every core): the most an interpreter is given."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def convert(saved_model_dir: str) -> Converted:
    """The model's ``serving_default`` signature converted to TensorFlow Lite.

    Raises ``NotConvertible`` when the SavedModel is larger than ``MAX_CONVERT_BYTES`` or needs ops outside
    TensorFlow Lite's builtins (``Converted.call`` raises it when the model's inputs and outputs do not fit);
    ``ConversionFailed`` when the child process timed out or died.
    """
    size = _size(saved_model_dir)
    if size > MAX_CONVERT_BYTES:
        raise NotConvertible(f"the model has {size} bytes, more than the {MAX_CONVERT_BYTES} converted")
    try:
        content = (_convert_here if size <= CONVERT_IN_PROCESS_BYTES else _convert_in_child)(saved_model_dir)
    except (NotConvertible, ConversionFailed):
        raise
    except Exception as err:  # unsupported ops and converter errors: TensorFlow serves the model
        raise NotConvertible(_reason(str(err)) or repr(err)) from err
    return Converted(content)


if __name__ == "__main__":
    Path(sys.argv[2]).write_bytes(_convert_here(sys.argv[1]))
