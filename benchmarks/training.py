"""Training throughput: a TrainingJob run locally (1 and 2 Ray Train workers) against plain `model.fit`.

The same model (the built-in mlp) and data (digits, 80/20 split), the same global batch and epochs, a
checkpoint every epoch. Samples/second and seconds per epoch are measured over the epochs after the first
(steady state, as reported by the progress events or a Keras callback); the wall time includes start-up
(Ray, worker processes, TensorFlow imports).

    python -m benchmarks.training [--quick] [--repeats 3] [--epochs 8] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import pyspy
from .harness import (
    REPO,
    RESULTS,
    Section,
    fold_categories,
    markdown_table,
    progress,
    pyplot,
    stamp,
    summarize,
    write_results,
)

DIGITS_TRAIN_ROWS = 1438  # digits' 1,797 rows less the 20% validation split

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


def trainserve_run(epochs: int, workers: int, profile_to: Path | None = None) -> dict[str, Any]:
    """One `trainserve local train`-equivalent run, timing epochs by their progress events; with ``profile_to``,
    py-spy records the first Ray Train worker for its whole life (folded into ``result["profile"]``)."""
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
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(job)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=folder,
        )
        recording = _record_worker(process, profile_to) if profile_to is not None else None
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"training run failed ({process.returncode}):\n{stderr[-3000:]}")
        result = json.loads(stdout.strip().splitlines()[-1])
    out: dict[str, Any] = {
        "rate": _steady_rate(result["ends"], DIGITS_TRAIN_ROWS),
        "wall": time.monotonic() - started,
        "val_accuracy": result["val_accuracy"],
    }
    if recording is not None:
        profile = recording.finish(top=20)
        lines = [line for line in recording.lines if pyspy.TRAINING_THREAD in line]
        out["profile"] = profile | {
            "categories": fold_categories(lines, pyspy.TRAINING_CATEGORIES),
            "training_thread_seconds": sum(int(line.rsplit(" ", 1)[1]) for line in lines) / recording.rate,
            "epoch_seconds": DIGITS_TRAIN_ROWS / out["rate"],
        }
    return out


def _record_worker(process: subprocess.Popen[str], output: Path, timeout: float = 180) -> pyspy.Recording | None:
    """py-spy on the first Ray Train worker as soon as it exists, until it exits."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        workers = pyspy.find_pids("RayTrainWorker")
        if workers:
            return pyspy.Recording(workers[0], timeout * 4, output, rate=100, idle=True)
        time.sleep(0.1)
    return None


@dataclass
class TrainingPlan:
    epochs: int = 8
    repeats: int = 3
    workers: list[int] = field(default_factory=lambda: [1, 2])
    profile: bool = False  # one more run of the most workers with py-spy on a Ray Train worker

    @classmethod
    def quick(cls) -> TrainingPlan:
        return cls(epochs=3, repeats=1, workers=[1])

    @classmethod
    def full(cls) -> TrainingPlan:
        return cls()


PLAIN = "plain model.fit"


def label(workers: int) -> str:
    return f"trainserve, {workers} worker{'s' if workers > 1 else ''}"


def measure(plan: TrainingPlan, prefix: str) -> Section:
    started = time.monotonic()
    runs: dict[str, list[dict[str, float]]] = {PLAIN: []} | {label(w): [] for w in plan.workers}
    for index in range(plan.repeats):
        progress(f"training, repeat {index + 1}/{plan.repeats}: plain fit, then trainserve {plan.workers} worker(s)")
        runs[PLAIN].append(plain_fit(plan.epochs))
        for workers in plan.workers:
            runs[label(workers)].append(trainserve_run(plan.epochs, workers))
    profile = None
    if plan.profile:
        workers = max(plan.workers)
        progress(f"training: one more run with {workers} worker(s) under py-spy")
        profiled = trainserve_run(plan.epochs, workers, RESULTS / f"{prefix}profile-training.txt")
        profile = profiled.get("profile")
    for results in runs.values():
        for result in results:
            result["epoch_seconds"] = DIGITS_TRAIN_ROWS / result["rate"]  # one epoch at the steady rate
    keys = ("rate", "epoch_seconds", "wall", "val_accuracy")
    figures = {name: {key: summarize([r[key] for r in results]) for key in keys} for name, results in runs.items()}
    baseline = figures[PLAIN]["rate"]["median"]
    rows = [
        [
            name,
            f"{f['rate']['median']:.0f} ({f['rate']['min']:.0f}-{f['rate']['max']:.0f})",
            f"{f['epoch_seconds']['median'] * 1000:.0f}",
            f"{f['rate']['median'] / baseline:.2f}",
            f"{f['wall']['median']:.1f} ({f['wall']['min']:.1f}-{f['wall']['max']:.1f})",
            f"{f['val_accuracy']['median']:.3f}",
        ]
        for name, f in figures.items()
    ]
    table = markdown_table(
        [
            "run",
            "samples/s, epochs 2+ (min-max)",
            "ms/epoch",
            "vs plain fit",
            "wall s incl. start-up (min-max)",
            "val accuracy",
        ],
        rows,
    )
    notes = [
        f"digits mlp, {plan.epochs} epochs, global batch 64, a checkpoint every epoch, {plan.repeats} repeat(s); "
        "the ratio is the overhead of Ray Train (MultiWorkerMirroredStrategy) plus checkpointing."
    ]
    if profile:
        shares = ", ".join(f"{label} {share:.0%}" for label, share in profile["categories"].items())
        notes.append(
            f"py-spy (idle samples included) on a Ray Train worker of one more {max(plan.workers)}-worker run "
            f"({profile['file']}); wall time of its training thread ({profile['training_thread_seconds']:.1f} s, "
            f"epochs of {profile['epoch_seconds'] * 1000:.0f} ms): {shares}"
        )
    png = RESULTS / f"{prefix}training.png"
    plot(figures, png)
    return Section(
        name="training",
        title="Training: TrainingJob on a local Ray vs plain model.fit",
        figures={"plan": asdict(plan), "figures": figures, "profile": profile},
        table=table,
        notes=notes,
        plots=[png],
        seconds=time.monotonic() - started,
    )


def plot(figures: dict[str, Any], path: Path) -> None:
    """Samples/second and wall time per run, bars at the median, whiskers min-max."""
    plt = pyplot()
    names = list(figures)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, title in (
        (axes[0], "rate", "samples/second, epochs 2+ (higher is better)"),
        (axes[1], "wall", "wall seconds incl. start-up (lower is better)"),
    ):
        medians = [figures[n][key]["median"] for n in names]
        low = [m - figures[n][key]["min"] for m, n in zip(medians, names, strict=True)]
        high = [figures[n][key]["max"] - m for m, n in zip(medians, names, strict=True)]
        axis.bar(range(len(names)), medians, yerr=[low, high], capsize=4, color=["grey"] + ["C0"] * (len(names) - 1))
        axis.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names])
        axis.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 epochs, one repeat, 1 worker")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    args = parser.parse_args()
    plan = TrainingPlan.quick() if args.quick else TrainingPlan.full()
    plan.repeats = args.repeats or plan.repeats
    plan.epochs = args.epochs or plan.epochs
    plan.workers = args.workers or plan.workers
    section = measure(plan, f"{stamp()}-")
    path = write_results("training", section.figures, section.markdown())
    print(section.markdown())
    print(f"\nwritten: {path} ({stamp()})")


if __name__ == "__main__":
    main()
