"""Training throughput: a TrainingJob run locally (1 and 2 Ray Train workers) against plain Keras `model.fit`.

Scenarios: the digits mlp (1,438 rows: per-epoch overheads dominate), and realistic sizes read through the
normal ``dataset.uri`` path from a parquet file generated once under the bench's work folder: digits images
augmented (shifted by a pixel, noise added) to 200,000 rows of 64 features for the mlp, and to fewer rows for the
cnn. Plain `fit` trains the same network on the same rows (``load_dataset``, the same split), with the same
batch and epochs, validates and saves its weights every epoch, as the TrainingJob checkpoints every epoch.

Per run: samples/second over epochs 2+ (steady state; the first includes tracing), seconds from the command to
the first epoch's end, the fixed cost (wall time less the epochs at the steady rate: start-up, data, export),
seconds to a target validation accuracy, wall time.

    python -m benchmarks.training [--quick] [--repeats 3] [--workers 1 2] [--scenarios mlp-200k]
        [--compare REF]   # also run the workloads of git REF, side by side in the same run
        [--gpus 1] [--mixed-precision]   # benchmarks/gpu.sh
"""

from __future__ import annotations

import argparse
import json
import os
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
    fmt,
    fold_categories,
    markdown_table,
    progress,
    pyplot,
    stamp,
    summarize,
    write_results,
)


@dataclass
class Scenario:
    """One model on one data set; ``rows`` None is the built-in digits."""

    name: str
    model: dict[str, Any]
    epochs: int
    batch: int
    target_accuracy: float
    rows: int | None = None


DIGITS = Scenario("digits-mlp", {"name": "mlp", "hiddenUnits": [128, 64], "dropout": 0.1}, 8, 64, 0.95)
MLP_200K = Scenario("mlp-200k", {"name": "mlp", "hiddenUnits": [256, 128], "dropout": 0.1}, 8, 256, 0.9, 200_000)
CNN_40K = Scenario(
    "cnn-40k", {"name": "cnn", "filters": [16, 32], "hiddenUnits": [64], "inputShape": [8, 8, 1]}, 5, 256, 0.9, 40_000
)
SCENARIOS = {s.name: s for s in (DIGITS, MLP_200K, CNN_40K)}


def augmented_digits(rows: int, folder: Path, seed: int = 0) -> Path:
    """``rows`` digits images, each shifted by up to a pixel with Gaussian noise, as parquet (written once)."""
    path = folder / f"digits-augmented-{rows}-{seed}.parquet"
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(digits.images), rows)
    padded = np.pad(digits.images[pick], ((0, 0), (1, 1), (1, 1)))
    dx, dy = rng.integers(0, 3, rows), rng.integers(0, 3, rows)
    rows_index = np.arange(8)[None, :, None] + dy[:, None, None]
    cols_index = np.arange(8)[None, None, :] + dx[:, None, None]
    images = padded[np.arange(rows)[:, None, None], rows_index, cols_index]
    images = np.clip(images + rng.normal(0, 1.5, images.shape), 0, 16).astype("float32").reshape(rows, 64)
    columns = {f"pixel_{i}": images[:, i] for i in range(64)} | {"label": digits.target[pick].astype("int64")}
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return path


def _spec(
    scenario: Scenario, workers: int, output: str, data: Path | None, gpus: int = 0, mixed: bool = False
) -> dict[str, Any]:
    document = yaml.safe_load((REPO / "examples" / "digits-trainingjob.yaml").read_text())
    spec = document["spec"]
    spec["model"] = {"builtin": scenario.model}
    if data is not None:
        spec["dataset"] = {"uri": str(data), "format": "parquet", "validationSplit": 0.2, "shuffleSeed": 42}
    spec["training"]["epochs"] = scenario.epochs
    spec["training"]["batchSize"] = scenario.batch
    spec["resources"]["workers"] = workers
    spec["resources"]["gpusPerWorker"] = gpus
    if mixed:
        spec["training"]["mixedPrecision"] = True
    spec["output"]["uri"] = output
    spec["checkpoint"] = {"everyEpochs": 1, "keep": 2}
    return document


PLAIN_FIT = """
import json, os, sys, tempfile, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as keras, tensorflow as tf
from trainserve.api.trainingjob import TrainingJobSpec
from trainserve_workloads.datasets import load_dataset
from trainserve_workloads.models import build_model, compile_model
spec = TrainingJobSpec.model_validate(json.loads(sys.argv[1]))
if spec.training.mixed_precision:
    from trainserve_workloads.train_loop import _mixed_policy
    keras.mixed_precision.set_global_policy(_mixed_policy())
data = load_dataset(spec.dataset, spec.training.loss)
keras.utils.set_random_seed(7)
model = build_model(spec, data.n_features, len(data.classes), data.x_train)
compile_model(model, spec.training)
ends, accuracy, folder = [], [], tempfile.mkdtemp()
class Clock(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.save_weights(os.path.join(folder, "weights"))
        ends.append(time.monotonic()); accuracy.append(float(logs.get("val_accuracy", 0)))
history = model.fit(data.x_train, data.y_train, batch_size=spec.training.batch_size, epochs=spec.training.epochs,
                    validation_data=(data.x_val, data.y_val), callbacks=[Clock()], verbose=0)
print(json.dumps({"ends": ends, "accuracy": accuracy, "rows": len(data.x_train)}))
"""

# As `trainserve local train` runs it: one worker in this process where the tree can (in_process), else Ray Train.
TRAINSERVE_RUN = """
import inspect, json, sys, time, yaml
from trainserve_workloads.train import run
from trainserve_workloads.progress import CallbackSink
ends, accuracy = [], []
def seen(event):
    if event.type == "epoch":
        ends.append(time.monotonic()); accuracy.append(event.metrics.get("val_accuracy", 0.0))
local = {"in_process": True} if "in_process" in inspect.signature(run).parameters else {}
run(yaml.safe_load(open(sys.argv[1])), CallbackSink(seen), **local)
print(json.dumps({"ends": ends, "accuracy": accuracy}))
"""


def _steady_rate(ends: list[float], rows: int) -> float:
    """Samples/second over epochs 2..N (the first epoch includes tracing)."""
    if len(ends) < 3:
        raise ValueError("need at least 3 epochs")
    return rows * (len(ends) - 1) / (ends[-1] - ends[0])


def _figures(result: dict[str, Any], rows: int, started: float, wall: float, target: float) -> dict[str, float]:
    ends, accuracy = result["ends"], result["accuracy"]
    rate = _steady_rate(ends, rows)
    reached = [end - started for end, acc in zip(ends, accuracy, strict=True) if acc >= target]
    return {
        "rate": rate,
        "epoch_seconds": rows / rate,
        "first_epoch_s": ends[0] - started,
        "fixed_s": wall - len(ends) * rows / rate,
        "target_s": reached[0] if reached else float("nan"),
        "wall": wall,
        "val_accuracy": accuracy[-1],
    }


def _environment(tree: Path) -> dict[str, str]:
    """This process's environment with ``tree``'s operator and workloads first on the path."""
    paths = [str(tree / "operator"), str(tree / "workloads"), str(tree)]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths), "TRAINSERVE_BENCH_TREE": str(tree)}


def _train_rows(scenario: Scenario) -> int:
    total = scenario.rows if scenario.rows is not None else 1797
    return total - round(total * 0.2)


def plain_fit(scenario: Scenario, data: Path | None, gpus: int = 0, mixed: bool = False) -> dict[str, float]:
    spec = _spec(scenario, 1, "/unused", data, gpus, mixed)["spec"]
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_FIT, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=_environment(REPO),
    )
    if out.returncode != 0:
        raise RuntimeError(f"plain fit failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return _figures(result, result["rows"], started, time.monotonic() - started, scenario.target_accuracy)


def trainserve_run(
    scenario: Scenario,
    workers: int,
    data: Path | None,
    tree: Path = REPO,
    profile_to: Path | None = None,
    gpus: int = 0,
    mixed: bool = False,
) -> dict[str, Any]:
    """One `trainserve local train`-equivalent run of the workloads in ``tree``, timing epochs by their progress
    events; with ``profile_to``, py-spy records the first Ray Train worker for its whole life."""
    with tempfile.TemporaryDirectory() as folder:
        job = Path(folder) / "job.yaml"
        job.write_text(yaml.safe_dump(_spec(scenario, workers, str(Path(folder) / "models"), data, gpus, mixed)))
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", TRAINSERVE_RUN, str(job)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=folder,
            env=_environment(tree),
        )
        recording = _record_worker(process, profile_to) if profile_to is not None else None
        stdout, stderr = process.communicate()
        wall = time.monotonic() - started
        if process.returncode != 0:
            raise RuntimeError(f"training run failed ({process.returncode}):\n{stderr[-3000:]}")
        result = json.loads(stdout.strip().splitlines()[-1])
    out: dict[str, Any] = _figures(result, _train_rows(scenario), started, wall, scenario.target_accuracy)
    if recording is not None:
        profile = recording.finish(top=20)
        lines = [line for line in recording.lines if pyspy.TRAINING_THREAD in line]
        out["profile"] = profile | {
            "categories": fold_categories(lines, pyspy.TRAINING_CATEGORIES),
            "training_thread_seconds": sum(int(line.rsplit(" ", 1)[1]) for line in lines) / recording.rate,
        }
    return out


def command_start_up(tree: Path, options: list[str]) -> dict[str, float]:
    """`trainserve local train` of the digits example on one worker, as a user types it (``tree``'s CLI): seconds
    from the command to its first checkpoint (the first epoch's progress) and to its exit."""
    with tempfile.TemporaryDirectory() as folder:
        job = Path(folder) / "job.yaml"
        job.write_text(yaml.safe_dump(_spec(SCENARIOS["digits-mlp"], 1, str(Path(folder) / "models"), None)))
        marker = Path(folder) / "models" / "checkpoints" / "epoch-000001" / "checkpoint.json"
        command = [sys.executable, "-m", "trainserve.cli", "local", "train", "-f", str(job), "--no-progress", *options]
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=folder, env=_environment(tree), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        first: float | None = None
        while process.poll() is None:
            if first is None and marker.exists():
                first = time.monotonic() - started
            time.sleep(0.01)
        wall = time.monotonic() - started
        if process.returncode != 0:
            raise RuntimeError(f"`{' '.join(command[2:])}` failed ({process.returncode}):\n{process.stderr}")
    return {"first_epoch_s": first if first is not None else float("nan"), "wall": wall}


def _record_worker(process: subprocess.Popen[str], output: Path, timeout: float = 300) -> pyspy.Recording | None:
    """py-spy on the first Ray Train worker as soon as it exists, until it exits."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        workers = pyspy.find_pids("RayTrainWorker")
        if workers:
            return pyspy.Recording(workers[0], timeout * 4, output, rate=100, idle=True)
        time.sleep(0.1)
    return None


def checkout(ref: str, folder: Path) -> Path:
    """The operator and workloads of git ``ref``, extracted under ``folder`` (for a side-by-side run)."""
    tree = folder / f"tree-{ref.replace('/', '_')}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", ref, "operator", "workloads", "examples"], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


@dataclass
class TrainingPlan:
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    repeats: int = 2
    workers: list[int] = field(default_factory=lambda: [1, 2])
    #: Rows of each generated data set (0: the scenario's own size).
    rows: int = 0
    #: Epochs of each scenario (0: the scenario's own).
    epochs: int = 0
    #: Git refs whose workloads run too, side by side (the "before" of a change).
    compare: list[str] = field(default_factory=list)
    profile: bool = False  # one more run of the largest scenario with the most workers, py-spy on a worker
    #: `trainserve local train` of digits on one worker, this often per command line (0: not measured).
    start_up_runs: int = 3
    gpus: int = 0  # GPUs per worker (and plain fit on the GPU): benchmarks/gpu.sh
    mixed_precision: bool = False

    @classmethod
    def quick(cls) -> TrainingPlan:
        return cls(scenarios=["digits-mlp", "mlp-200k"], repeats=1, workers=[1], rows=20_000, epochs=3, start_up_runs=1)

    @classmethod
    def full(cls) -> TrainingPlan:
        return cls()

    def scenario(self, name: str) -> Scenario:
        base = SCENARIOS[name]
        rows = self.rows if self.rows and base.rows is not None else base.rows
        return Scenario(base.name, base.model, self.epochs or base.epochs, base.batch, base.target_accuracy, rows)


PLAIN = "plain model.fit"


def label(workers: int, ref: str | None = None) -> str:
    return f"trainserve{f'@{ref}' if ref else ''}, {workers} worker{'s' if workers > 1 else ''}"


def measure(plan: TrainingPlan, prefix: str, work: Path | None = None) -> Section:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trainserve-bench-training-") as scratch:
        folder = work or Path(scratch)
        trees = {ref: checkout(ref, folder) for ref in plan.compare}
        figures: dict[str, dict[str, Any]] = {}
        profile = None
        for name in plan.scenarios:
            scenario = plan.scenario(name)
            data = augmented_digits(scenario.rows, folder / "data") if scenario.rows else None
            figures[scenario.name] = _measure_scenario(plan, scenario, data, trees)
        start_up = _measure_start_up(plan, trees)
        if plan.profile:
            scenario = plan.scenario(plan.scenarios[-1])
            data = augmented_digits(scenario.rows, folder / "data") if scenario.rows else None
            progress(f"training: one more {scenario.name} run with {max(plan.workers)} worker(s) under py-spy")
            output = RESULTS / f"{prefix}profile-training.txt"
            profile = trainserve_run(scenario, max(plan.workers), data, profile_to=output).get("profile")
    tables, notes = [], []
    for name, runs in figures.items():
        scenario = plan.scenario(name)
        tables.append(f"**{_describe(scenario)}**\n\n{_table(runs, scenario)}")
    notes.append(
        f"{plan.repeats} repeat(s), medians (min-max); a checkpoint every epoch (plain fit: save_weights every "
        "epoch); samples/s over epochs 2+; fixed cost = wall less the epochs at the steady rate (start-up, data, "
        "export); 1 worker runs without MultiWorkerMirroredStrategy, 2 with it."
    )
    if start_up:
        tables.append(f"**{START_UP}**\n\n{_start_up_table(start_up)}")
    if profile:
        shares = ", ".join(f"{category} {share:.0%}" for category, share in profile["categories"].items())
        notes.append(
            f"py-spy (idle samples included) on a Ray Train worker of one more {max(plan.workers)}-worker run "
            f"({profile['file']}); wall time of its training thread ({profile['training_thread_seconds']:.1f} s): "
            f"{shares}"
        )
    png = RESULTS / f"{prefix}training.png"
    plot(figures, png)
    return Section(
        name="training",
        title="Training: TrainingJob on a local Ray vs plain model.fit",
        figures={"plan": asdict(plan), "figures": figures, "profile": profile, "start_up": start_up},
        table="\n\n".join(tables),
        notes=notes,
        plots=[png],
        seconds=time.monotonic() - started,
    )


KEYS = ("rate", "epoch_seconds", "first_epoch_s", "fixed_s", "target_s", "wall", "val_accuracy")


def _measure_scenario(
    plan: TrainingPlan, scenario: Scenario, data: Path | None, trees: dict[str, Path]
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {PLAIN: []}
    for index in range(plan.repeats):
        progress(
            f"training {scenario.name}, repeat {index + 1}/{plan.repeats}: plain fit, then {plan.workers} worker(s)"
        )
        gpus, mixed = plan.gpus, plan.mixed_precision
        runs[PLAIN].append(plain_fit(scenario, data, gpus, mixed))
        for workers in plan.workers:
            for ref, tree in trees.items():
                result = trainserve_run(scenario, workers, data, tree, gpus=gpus, mixed=mixed)
                runs.setdefault(label(workers, ref), []).append(result)
            runs.setdefault(label(workers), []).append(trainserve_run(scenario, workers, data, gpus=gpus, mixed=mixed))
    return {name: {key: summarize([r[key] for r in results]) for key in KEYS} for name, results in runs.items()}


START_UP = (
    f"`trainserve local train` of digits ({DIGITS.epochs} epochs, batch {DIGITS.batch}) on one worker, from the command"
)


def _measure_start_up(plan: TrainingPlan, trees: dict[str, Path]) -> dict[str, Any]:
    """Each command line ``plan.start_up_runs`` times, in turn: the compared trees' default, ours, ours `--ray`."""
    if not plan.start_up_runs or 1 not in plan.workers:
        return {}
    commands = {f"trainserve@{ref}": (tree, []) for ref, tree in trees.items()}
    commands |= {"trainserve": (REPO, []), "trainserve --ray": (REPO, ["--ray"])}
    runs: dict[str, list[dict[str, float]]] = {}
    for index in range(plan.start_up_runs):
        progress(f"training: `local train` start-up, round {index + 1}/{plan.start_up_runs}")
        for name, (tree, options) in commands.items():
            runs.setdefault(name, []).append(command_start_up(tree, options))
    return {
        name: {key: summarize([r[key] for r in results]) for key in ("first_epoch_s", "wall")}
        for name, results in runs.items()
    }


def _start_up_table(start_up: dict[str, Any]) -> str:
    rows = [[name, fmt(f["first_epoch_s"], 1), fmt(f["wall"], 1)] for name, f in start_up.items()]
    return markdown_table(["command", "s to the first epoch's checkpoint", "s to exit"], rows)


def _describe(scenario: Scenario) -> str:
    rows = f"{scenario.rows:,} augmented digits rows" if scenario.rows else "digits (1,797 rows)"
    model = scenario.model
    layers = f"filters {model['filters']}, dense {model['hiddenUnits']}" if "filters" in model else model["hiddenUnits"]
    return (
        f"{scenario.name}: {model['name']} {layers} on {rows} of 64 features (80/20 split), batch {scenario.batch}, "
        f"{scenario.epochs} epochs; target validation accuracy {scenario.target_accuracy}"
    )


def _table(runs: dict[str, Any], scenario: Scenario) -> str:
    baseline = runs[PLAIN]["rate"]["median"]
    rows = [
        [
            name,
            fmt(f["rate"]),
            f"{f['epoch_seconds']['median']:.2f}",
            f"{f['rate']['median'] / baseline:.2f}",
            fmt(f["first_epoch_s"], 1),
            fmt(f["fixed_s"], 1),
            fmt(f["target_s"], 1),
            fmt(f["wall"], 1),
            f"{f['val_accuracy']['median']:.3f}",
        ]
        for name, f in runs.items()
    ]
    headers = [
        "run",
        "samples/s, epochs 2+",
        "s/epoch",
        "vs plain fit",
        "s to 1st epoch",
        "fixed cost s",
        f"s to val acc {scenario.target_accuracy}",
        "wall s",
        "val accuracy",
    ]
    return markdown_table(headers, rows)


def plot(figures: dict[str, dict[str, Any]], path: Path) -> None:
    """Per scenario: samples/second and wall time per run, bars at the median, whiskers min-max."""
    plt = pyplot()
    fig, axes = plt.subplots(len(figures), 2, figsize=(12, 3.6 * len(figures)), squeeze=False)
    for row, (scenario, runs) in enumerate(figures.items()):
        names = list(runs)
        for axis, key, title in (
            (axes[row][0], "rate", "samples/second, epochs 2+ (higher is better)"),
            (axes[row][1], "wall", "wall seconds incl. start-up (lower is better)"),
        ):
            medians = [runs[n][key]["median"] for n in names]
            low = [m - runs[n][key]["min"] for m, n in zip(medians, names, strict=True)]
            high = [runs[n][key]["max"] - m for m, n in zip(medians, names, strict=True)]
            colors = ["grey"] + ["C1" if "@" in n else "C0" for n in names[1:]]
            axis.bar(range(len(names)), medians, yerr=[low, high], capsize=4, color=colors)
            axis.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names], fontsize=8)
            axis.set_title(f"{scenario}: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits and a 20,000-row mlp, 3 epochs, 1 worker")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every scenario")
    parser.add_argument("--rows", type=int, default=None, help="rows of every generated data set")
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=None)
    parser.add_argument("--compare", nargs="+", default=[], metavar="REF", help="git refs to run side by side")
    parser.add_argument("--profile", action="store_true", help="py-spy a worker of one more run")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per worker (benchmarks/gpu.sh)")
    parser.add_argument("--mixed-precision", action="store_true", help="training.mixedPrecision, plain fit too")
    args = parser.parse_args()
    plan = TrainingPlan.quick() if args.quick else TrainingPlan.full()
    plan.repeats = args.repeats or plan.repeats
    plan.epochs = args.epochs or plan.epochs
    plan.rows = args.rows or plan.rows
    plan.workers = args.workers or plan.workers
    plan.scenarios = args.scenarios or plan.scenarios
    plan.compare = args.compare
    plan.profile = args.profile
    plan.gpus, plan.mixed_precision = args.gpus, args.mixed_precision
    section = measure(plan, f"{stamp()}-")
    path = write_results("training", section.figures, section.markdown())
    print(section.markdown())
    print(f"\nwritten: {path} ({stamp()})")


if __name__ == "__main__":
    main()
