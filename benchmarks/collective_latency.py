"""What bounds two training workers on one machine: TensorFlow's all-reduce between two local processes, against
the compute of one training step (issue #24's two-worker target; docs/performance.md, "Two workers without Ray").

Plain TensorFlow processes with ``TF_CONFIG`` and ``MultiWorkerMirroredStrategy`` (ring), no Ray, no trainserve:
- the latency of one all-reduce, of the mlp's gradients (packed into one tensor, as TensorFlow does in a graph)
  and of one float: 16 in one ``tf.function``, called 20 times, best of 3 rounds;
- one step of Keras ``fit`` of the mlp 256-128 (40,000 random rows of 64 features, batch 256,
  ``steps_per_execution=16``, epochs 2-4): one process with two threads, and two workers with one thread each.

    python -m benchmarks.collective_latency
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trainserve_workloads.lifecycle import free_port

from .harness import markdown_table, progress, write_results

#: The mlp 256-128's parameters on 64 features and 10 classes: what one step all-reduces.
MLP_GRADIENT_FLOATS = 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
UNROLLED = 16
CALLS = 20
ROUNDS = 3
ROWS, FEATURES, BATCH, EPOCHS = 40_000, 64, 256, 3

CASES: dict[str, dict[str, Any]] = {
    "all-reduce of the mlp's gradients": {"kind": "allreduce", "floats": MLP_GRADIENT_FLOATS, "workers": 2},
    "all-reduce of one float": {"kind": "allreduce", "floats": 1, "workers": 2},
    "fit step, one process, 2 threads": {"kind": "fit", "workers": 1},
    "fit step, 2 workers, 1 thread each": {"kind": "fit", "workers": 2},
}


def _measure_allreduce(floats: int) -> float:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        values = tf.Variable(tf.random.normal([floats]))

    @tf.function  # type: ignore[misc]
    def unrolled() -> Any:
        def step() -> Any:
            context = tf.distribute.get_replica_context()
            out = tf.identity(values.read_value())
            for _ in range(UNROLLED):
                out = context.all_reduce("mean", out)
            return out

        return strategy.run(step)

    unrolled()
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            unrolled()
        best = min(best, (time.perf_counter() - started) / (CALLS * UNROLLED))
    return best


def _measure_fit(workers: int) -> float:
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else tf.distribute.get_strategy()
    random = np.random.default_rng(0)
    x = random.standard_normal((ROWS, FEATURES)).astype(np.float32)
    y = random.integers(0, 10, ROWS)
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.layers.Input((FEATURES,)),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=16)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # tracing, warm-up
    started = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    return (time.perf_counter() - started) / (EPOCHS * (ROWS // BATCH))


def worker(args: argparse.Namespace) -> None:
    """One process of a case: measures, and the first writes its figure to ``--out``."""
    case = CASES[args.case]
    threads = 2 if case["workers"] == 1 else 1
    if case["workers"] > 1:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in args.ports]}
        os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": args.index}})
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    seconds = _measure_allreduce(case["floats"]) if case["kind"] == "allreduce" else _measure_fit(case["workers"])
    if args.index == 0:
        Path(args.out).write_text(json.dumps({"seconds": seconds}))


def run_case(name: str) -> float:
    workers = CASES[name]["workers"]
    ports = [str(free_port()) for _ in range(2)]
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "figure.json"
        command = [sys.executable, "-m", "benchmarks.collective_latency", "--case", name, "--ports", *ports]
        processes = [
            subprocess.Popen([*command, "--index", str(i), "--out", str(out)], env=env, stderr=subprocess.DEVNULL)
            for i in range(workers)
        ]
        for process in processes:
            if process.wait(timeout=600) != 0:
                raise RuntimeError(f"{name}: a process exited with {process.returncode}")
        return float(json.loads(out.read_text())["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ports", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        worker(args)
        return
    figures = {}
    for name in CASES:
        progress(f"collective latency: {name}")
        figures[name] = run_case(name)
    step = figures["fit step, one process, 2 threads"]
    ceiling = step / (step + figures["all-reduce of the mlp's gradients"])
    rows = [[name, f"{seconds * 1000:.2f}"] for name, seconds in figures.items()]
    rows.append(["two workers' ceiling: one step's compute / (compute + one all-reduce)", f"{ceiling:.2f}x"])
    table = "## Two local TensorFlow workers: all-reduce latency against a step's compute\n\n" + markdown_table(
        ["case", "ms"], rows
    )
    print(table)
    path = write_results("collective-latency", {"seconds": figures, "ceilingVsPlainFit": ceiling}, table)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
