"""Training throughput: a TrainingJob run locally (1 and 2 Ray Train workers) against plain `model.fit`.

The same model (the built-in mlp) and data (digits, 80/20 split), the same global batch and epochs.
Samples/second are measured over the epochs after the first (steady state, as reported by the progress
events or a Keras callback); the wall time includes start-up (Ray, worker processes, TensorFlow imports).

    python -m benchmarks.training [--repeats 3] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from .harness import markdown_table, summarize, write_results

REPO = Path(__file__).resolve().parents[1]

PLAIN_FIT = """
import json, os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as keras, tensorflow as tf
from trainserve.api.trainingjob import TrainingJobSpec
from trainserve_workloads.datasets import load_dataset
from trainserve_workloads.models import build_model, compile_model
spec = TrainingJobSpec.model_validate(json.loads(sys.argv[1]))
data = load_dataset(spec.dataset, spec.training.loss)
keras.utils.set_random_seed(7)
model = build_model(spec, data.n_features, len(data.classes), data.x_train)
compile_model(model, spec.training)
ends = []
class Clock(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None): ends.append(time.monotonic())
start = time.monotonic()
history = model.fit(data.x_train, data.y_train, batch_size=spec.training.batch_size, epochs=spec.training.epochs,
                    validation_data=(data.x_val, data.y_val), callbacks=[Clock()], verbose=0)
print(json.dumps({"ends": ends, "start": start, "rows": len(data.x_train), "val_accuracy": history.history["val_accuracy"][-1]}))
"""


def _spec(epochs: int, workers: int, output: str) -> dict[str, Any]:
    document = yaml.safe_load((REPO / "examples" / "digits-trainingjob.yaml").read_text())
    document["spec"]["training"]["epochs"] = epochs
    document["spec"]["resources"]["workers"] = workers
    document["spec"]["output"]["uri"] = output
    document["spec"]["checkpoint"] = {"everyEpochs": 1, "keep": 2}
    return document


def _steady_rate(ends: list[float], rows: int) -> float:
    """Samples/second over epochs 2..N (the first epoch includes tracing)."""
    if len(ends) < 3:
        raise ValueError("need at least 3 epochs")
    return rows * (len(ends) - 1) / (ends[-1] - ends[0])


def plain_fit(epochs: int) -> dict[str, float]:
    spec = _spec(epochs, 1, "/unused")["spec"]
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_FIT, json.dumps(spec)], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "rate": _steady_rate(result["ends"], result["rows"]),
        "wall": time.monotonic() - started,
        "val_accuracy": result["val_accuracy"],
    }


def trainserve_run(epochs: int, workers: int) -> dict[str, float]:
    """One `trainserve local train`-equivalent run, timing epochs by their progress events."""
    with tempfile.TemporaryDirectory() as folder:
        document = _spec(epochs, workers, str(Path(folder) / "models"))
        job = Path(folder) / "job.yaml"
        job.write_text(yaml.safe_dump(document))
        script = (
            "import json, sys, time, yaml\n"
            "from trainserve_workloads.train import run\n"
            "from trainserve_workloads.progress import CallbackSink\n"
            "ends = []\n"
            "sink = CallbackSink(lambda e: ends.append(time.monotonic()) if e.type == 'epoch' else None)\n"
            "model = run(yaml.safe_load(open(sys.argv[1])), sink)\n"
            "print(json.dumps({'ends': ends, 'val_accuracy': model.metrics.get('val_accuracy')}))\n"
        )
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", script, str(job)], capture_output=True, text=True, check=True, cwd=folder
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = 1438  # digits' 1,797 rows less the 20% validation split
    return {
        "rate": _steady_rate(result["ends"], rows),
        "wall": time.monotonic() - started,
        "val_accuracy": result["val_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {
        "plain model.fit": [],
        "trainserve, 1 worker": [],
        "trainserve, 2 workers": [],
    }
    for _ in range(args.repeats):
        runs["plain model.fit"].append(plain_fit(args.epochs))
        runs["trainserve, 1 worker"].append(trainserve_run(args.epochs, 1))
        runs["trainserve, 2 workers"].append(trainserve_run(args.epochs, 2))
    figures = {
        name: {key: summarize([r[key] for r in results]) for key in ("rate", "wall", "val_accuracy")}
        for name, results in runs.items()
    }
    baseline = figures["plain model.fit"]["rate"]["median"]
    rows = [
        [
            name,
            f"{f['rate']['median']:.0f} ({f['rate']['min']:.0f}-{f['rate']['max']:.0f})",
            f"{f['rate']['median'] / baseline:.2f}",
            f"{f['wall']['median']:.1f} ({f['wall']['min']:.1f}-{f['wall']['max']:.1f})",
            f"{f['val_accuracy']['median']:.3f}",
        ]
        for name, f in figures.items()
    ]
    table = markdown_table(
        ["run", "samples/s, epochs 2+ (min-max)", "vs plain fit", "wall s incl. start-up (min-max)", "val accuracy"],
        rows,
    )
    path = write_results("training", {"epochs": args.epochs, "repeats": args.repeats, "figures": figures}, table)
    print(table)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
