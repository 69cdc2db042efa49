"""Serving: a ModelService (served as `trainserve local serve` serves it) against the FastAPI baseline, MLServer
with 1 and 2 workers (``mlserver_baseline``) and the model in-process; ours under ``runtime: auto`` and
``runtime: tensorflow``, each also against the best baseline of each cell.

Two models (the digits mlp; a compute-heavy dense network), several concurrency levels, load from `wrk` in its
own process (POST bodies from a Lua script). One server runs at a time. Figures per run: requests/second, p50
and p99 latency, non-2xx and socket errors; each the median (min-max) over the repeats. With ``--profile``, one
more c=1 run of the digits model measures CPU per request by process and thread (/proc), and one more is recorded
with py-spy, on the serving replica and on the baseline server. Then, per model, the primary's p99 at c=32 alone and
with a shadow candidate scoring every request (``serving_shadow``).

The ModelService runs in ``benchmarks.serve_driver``: the calls `trainserve local serve -f FILE` makes
(``local_serve.start`` with the resolved arguments), plus commands on stdin, so that the autoscaling benchmark can
take the running service over and change it in place.

    python -m benchmarks.serving [--quick] [--models digits heavy] [--repeats N] [--duration S] [--profile]
                                 [--no-shadow] [--runtime auto|tensorflow] [--only-runtime] [--no-mlserver]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainserve_workloads.lifecycle import free_port

from . import mlserver_baseline, pyspy
from .harness import (
    REPO,
    RESULTS,
    Section,
    Wrk,
    cpu_delta,
    cpu_snapshot,
    machine_busy_seconds,
    markdown_table,
    plain_log_axis,
    progress,
    pyplot,
    stamp,
    stop_process,
    summarize,
    wait_http,
    write_results,
)
from .models import FEATURES as ROWS
from .serving_shadow import measure_shadow, shadow_rows

MODELS = ("digits", "heavy")
FASTAPI = "FastAPI baseline"
KEYS = ("rps", "p50", "p99", "errors")


@dataclass
class ServingPlan:
    models: list[str] = field(default_factory=lambda: list(MODELS))
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32, 64])
    repeats: int = 3
    duration: float = 10.0
    warmup: float = 3.0
    in_process_seconds: float = 3.0
    profile_seconds: float = 0.0  # > 0: py-spy the digits servers during an extra c=1 run
    runtime: str = "auto"  # the ModelService's spec.runtime: "tensorflow" measures the serving path alone
    also_runtimes: list[str] = field(default_factory=lambda: ["tensorflow"])  # more runs of ours, other runtimes
    cpus_per_replica: float = 0.5  # ours; the baselines are not limited (2: the whole 2-core machine, as they use)
    mlserver_workers: list[int] = field(default_factory=lambda: list(mlserver_baseline.WORKERS))  # []: no MLServer
    shadow: bool = True  # also the primary's p99 at c=32 with a shadow candidate scoring every request

    @classmethod
    def quick(cls) -> ServingPlan:
        return cls(concurrency=[1, 32], repeats=1, duration=3.0, warmup=1.0, in_process_seconds=1.5)

    @classmethod
    def full(cls) -> ServingPlan:
        return cls()


def body(features: int) -> str:
    row = np.random.default_rng(1).random(features).round(4).tolist()
    return json.dumps({"instances": [row]})


def modelservice(name: str, model_dir: str, **spec: Any) -> dict[str, Any]:
    """The ModelService the benchmark serves: one replica at 0.5 CPU, batch 32 without waiting."""
    return {
        "apiVersion": "trainserve.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": model_dir},
            "replicas": 1,
            "batching": {"maxBatchSize": 32, "batchWaitTimeoutMs": 0},
            "resources": {"cpusPerReplica": 0.5, "memoryPerReplica": "2Gi"},
        }
        | spec,
    }


class LocalServer:
    """One ModelService served as `trainserve local serve` serves it (``benchmarks.serve_driver`` makes the same
    calls), on a free port; it also takes in-place updates and samples replica counts (for autoscaling)."""

    def __init__(self, service: dict[str, Any], work: Path):
        self.name = service["metadata"]["name"]
        self.work = work
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.log_path = work / f"serve-{self.name}-{self.port}.log"
        manifest = self._manifest(service)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.serve_driver", str(manifest), str(self.port), str(self.grpc_port)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _manifest(self, service: dict[str, Any]) -> Path:
        path = self.work / f"{self.name}-modelservice-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(service))
        return path

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(("ready", "ok", "error")):
                self.replies.put(line.strip())
        self.replies.put("error the server exited")

    def _reply(self, timeout: float) -> str:
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no answer within {timeout:.0f}s; log: {self.log_tail()}") from None
        if reply.startswith("error"):
            raise RuntimeError(f"{self.name}: {reply}; log: {self.log_tail()}")
        return reply

    def log_tail(self) -> str:
        return self.log_path.read_text()[-2000:] if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 240) -> None:
        self._reply(timeout)
        wait_http(f"{self.url}/v2/health/ready", self.process, timeout=60)

    def command(self, line: str, timeout: float = 240) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._reply(timeout)

    def update(self, service: dict[str, Any]) -> None:
        """Apply a changed ModelService in place (what an edit of the resource does in a cluster)."""
        self.command(f"update {self._manifest(service)}")

    def sample(self, path: Path, interval: float = 0.5) -> None:
        self.command(f"sample {path} {interval}")

    def replica_pids(self) -> list[int]:
        return pyspy.find_pids("ServeReplica", self.name, "ModelServer")

    def stop(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.write("stop\n")
                self.process.stdin.flush()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_process(self.process, timeout=15)


def run_load(
    url: str,
    name: str,
    plan: ServingPlan,
    profile: tuple[dict[str, int], Path] | None = None,
    request: tuple[str, str] | None = None,
) -> tuple[dict[int, dict[str, float]], dict[str, Any] | None]:
    """Warm-up, then every concurrency level.

    With ``profile`` ({label: pid}, file): two more c=1 runs. The first measures CPU time per request of each
    process (all threads, native code included, from /proc) and of the whole machine; the second records the
    first process (the one that runs the model) with py-spy. ``request``: path and body, default the V1 predict.
    """
    path, payload = request or (f"/v1/models/{name}:predict", body(ROWS[name]))
    with Wrk(f"{url}{path}", payload) as load:
        load.run(max(plan.concurrency), plan.warmup)
        results = {c: load.run(c, plan.duration) for c in plan.concurrency}
        if profile is None:
            return results, None
        pids, output = profile
        main = next(iter(pids.values()))
        before, threads_before = cpu_snapshot(), cpu_snapshot(f"/proc/{main}/task")
        machine_before = machine_busy_seconds()
        plain = load.run(1, plan.profile_seconds)
        requests = max(1, int(plain["requests"]))
        machine = (machine_busy_seconds() - machine_before) * 1000 / requests
        processes = cpu_delta(before, cpu_snapshot(), requests)
        threads = cpu_delta(threads_before, cpu_snapshot(f"/proc/{main}/task"), requests)
        cpu = {label: sum(p["ms"] for p in processes if p["pid"] == pid) for label, pid in pids.items()}
        cpu["whole machine (incl. wrk)"] = machine
        recording = pyspy.Recording(main, plan.profile_seconds, output)
        time.sleep(0.5)  # py-spy attaches
        during = load.run(1, plan.profile_seconds)
        folded = recording.finish(requests=int(during["requests"]))
        return results, folded | {
            "load": during,
            "unprofiled": plain,
            "cpuMsPerRequestByProcess": cpu,
            "topProcesses": processes,
            "topThreads": threads,
        }


def run_baseline(
    model_dir: str, name: str, plan: ServingPlan, profile_to: Path | None = None
) -> tuple[dict[int, dict[str, float]], dict[str, Any] | None]:
    """The FastAPI + uvicorn server: start, measure, stop."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.baseline_server", model_dir, name, str(port)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", process)
        profile = ({"uvicorn": process.pid}, profile_to) if profile_to is not None else None
        return run_load(f"http://127.0.0.1:{port}", name, plan, profile)
    finally:
        stop_process(process)


def wait_for_lite_decision(url: str, name: str, timeout: float = 300) -> dict[str, Any]:
    """Until the replica decided about TensorFlow Lite (``roles.primary.lite``), so that a background conversion
    does not share the CPU with the measurement; replicas push their roles with their counts, hence a request."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            f"{url}/v1/models/{name}:predict", body(ROWS[name]).encode(), {"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=30).close()
        time.sleep(1.2)
        with urllib.request.urlopen(f"{url}/v2/models/{name}/stats", timeout=30) as answer:
            lite: dict[str, Any] = json.load(answer)["roles"]["primary"]["lite"]
        if lite["state"] != "converting" or time.monotonic() > deadline:
            progress(f"{name}: TensorFlow Lite {lite['state']}: {lite['reason']}")
            return lite


def run_trainserve(
    model_dir: str,
    name: str,
    plan: ServingPlan,
    work: Path,
    profile_to: Path | None = None,
    keep: bool = False,
    runtime: str | None = None,
) -> tuple[dict[int, dict[str, float]], dict[str, Any] | None, LocalServer | None]:
    """The ModelService (``runtime``, default the plan's): start, measure, stop (or hand the running server over
    with ``keep``)."""
    service = modelservice(name, model_dir, runtime=runtime or plan.runtime)
    service["spec"]["resources"]["cpusPerReplica"] = plan.cpus_per_replica
    server = LocalServer(service, work)
    try:
        server.wait_ready()
        wait_for_lite_decision(server.url, name)
        profile = None
        if profile_to is not None:
            pids = server.replica_pids()
            if not pids:
                raise RuntimeError(f"no serving replica process found for {name}")
            profile = ({"replica": pids[0]}, profile_to)
        results, recorded = run_load(server.url, name, plan, profile)
    except BaseException:
        server.stop()
        raise
    if keep:
        return results, recorded, server
    server.stop()
    return results, recorded, None


def run_mlserver(
    python: Path, model_dir: str, name: str, workers: int, plan: ServingPlan, work: Path
) -> dict[int, dict[str, float]]:
    """MLServer with ``workers`` inference processes: start, measure (V2 requests of one row), stop."""
    server = mlserver_baseline.MLServer(python, model_dir, name, workers, work)
    try:
        request = (f"/v2/models/{name}/infer", mlserver_baseline.v2_body(ROWS[name]))
        return run_load(server.url, name, plan, request=request)[0]
    finally:
        server.stop()


def ours_name(runtime: str) -> str:
    return "trainserve" if runtime == "auto" else f"trainserve, runtime {runtime}"


def mlserver_python(plan: ServingPlan, notes: list[str]) -> Path | None:
    """MLServer's venv, made if needed; None (and a note saying why) when it cannot be."""
    if not plan.mlserver_workers:
        return None
    try:
        return mlserver_baseline.ensure_venv()
    except mlserver_baseline.MLServerUnavailable as err:
        progress(f"MLServer baseline skipped: {err}")
        notes.append(f"MLServer baseline skipped: {err}")
        return None


def run_baselines(
    model_dir: str, name: str, plan: ServingPlan, work: Path, python: Path | None, notes: list[str]
) -> dict[str, dict[int, dict[str, float]]]:
    """MLServer with 1 and 2 workers (when its venv is there), one run each."""
    results = {}
    for workers in plan.mlserver_workers if python is not None else []:
        try:
            results[mlserver_baseline.server_name(workers)] = run_mlserver(python, model_dir, name, workers, plan, work)
        except mlserver_baseline.MLServerUnavailable as err:
            progress(f"{mlserver_baseline.server_name(workers)} skipped: {err}")
            notes.append(f"{name}, {mlserver_baseline.server_name(workers)} skipped: {str(err)[:300]}")
    return results


def measure(
    plan: ServingPlan,
    models: dict[str, str],
    limits: dict[str, list[dict[str, float]]],
    work: Path,
    prefix: str,
    hand_over: list[LocalServer] | None = None,
) -> Section:
    """Every model x server x repeat; returns the section (table, figures, plot).

    ``limits`` are the in-process runs per model (``models.build`` measures them where it builds the models).
    With ``hand_over``, the last ModelService server started (the last model's, last repeat) is not stopped but
    appended to it, for the autoscaling benchmark to reuse: one Ray start fewer.
    """
    started = time.monotonic()
    figures: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    skipped: list[str] = []
    python = mlserver_python(plan, skipped)
    for position, name in enumerate(plan.models):
        model_dir = models[name]
        runs: dict[str, list[dict[int, dict[str, float]]]] = {}
        shadow = None  # first: the last server of the loop below may be handed over, still running
        if plan.shadow:
            shadow = measure_shadow(name, model_dir, plan.runtime, plan.repeats, plan.duration, plan.warmup, work)
        for index in range(plan.repeats):
            profiling = name == "digits" and index == 0 and plan.profile_seconds > 0
            progress(f"serving {name}, repeat {index + 1}/{plan.repeats}: the baselines, then trainserve")
            baseline, profile = run_baseline(
                model_dir, name, plan, RESULTS / f"{prefix}profile-baseline.txt" if profiling else None
            )
            runs.setdefault(FASTAPI, []).append(baseline)
            if profile is not None:
                profiles[FASTAPI] = profile
            for server_name, results in run_baselines(model_dir, name, plan, work, python, skipped).items():
                runs.setdefault(server_name, []).append(results)
            for runtime in plan.also_runtimes:
                runs.setdefault(ours_name(runtime), []).append(
                    run_trainserve(model_dir, name, plan, work, runtime=runtime)[0]
                )
            last = position == len(plan.models) - 1 and index == plan.repeats - 1
            ours, profile, server = run_trainserve(
                model_dir,
                name,
                plan,
                work,
                RESULTS / f"{prefix}profile-trainserve.txt" if profiling else None,
                keep=hand_over is not None and last,
            )
            runs.setdefault("trainserve", []).append(ours)
            if profile is not None:
                profiles["trainserve"] = profile
            if server is not None and hand_over is not None:
                hand_over.append(server)
        figures[name] = {
            server: {str(c): {k: summarize([r[c][k] for r in results]) for k in KEYS} for c in plan.concurrency}
            for server, results in runs.items()
            if len(results) == plan.repeats  # a baseline that failed in one repeat is left out
        }
        figures[name]["in-process"] = {
            k: summarize([r[k] for r in limits.get(name, [])]) for k in ("rps", "p50", "p99")
        }
        if shadow is not None:
            figures[name]["shadow"] = shadow

    table = _table(figures, plan) + "\n\n" + best_baseline_table(figures, plan)
    targets = _targets(figures)
    notes = [
        f"{plan.repeats} repeat(s) of {plan.duration:g} s per level after a {plan.warmup:g} s warm-up; one replica "
        f"at {plan.cpus_per_replica:g} CPU (TensorFlow's pools: {math.ceil(plan.cpus_per_replica)} thread(s)), batch 32, wait 0, runtime {plan.runtime}; cells are req/s / p50 / p99 ms, medians over the "
        "repeats.",
        f"MLServer {mlserver_baseline.MLSERVER_VERSION}: custom MLModel on the same SavedModel, adaptive batching "
        f"(max_batch_size {mlserver_baseline.MAX_BATCH_SIZE}, max_batch_time {mlserver_baseline.MAX_BATCH_TIME_S:g} "
        "s), V2 requests of one row (it has no V1); FastAPI and trainserve get V1 requests of the same row. "
        "The baselines' processes have no CPU limit (TensorFlow's default pools: every core).",
        *skipped,
        f"targets: heavy c=32 >= 5x the baseline's req/s with a lower p99 (measured "
        f"{_x(targets.get('heavy_c32_ratio'), 5.0)}, p99 lower: {targets.get('heavy_c32_p99_lower', 'n/a')}); "
        f"digits c=1 >= 0.85x (measured {_x(targets.get('digits_c1_ratio'), 0.85)}).",
    ]
    if plan.shadow:
        notes.append(
            "rows `32, shadow 100%`: the same service with a copy of the model as a shadow candidate scoring every "
            "request after the primary answered (`canary.mode: shadow`); next to `32, no shadow`, what shadow "
            "evaluation costs the primary's clients. The candidate drops what it cannot keep up with."
        )
    if profiles:
        notes += profile_notes(profiles)
    png = RESULTS / f"{prefix}{result_name(plan)}.png"
    plot(figures, plan.concurrency, png)
    return Section(
        name="serving",
        title="Serving: ModelService vs FastAPI + uvicorn (one model call per request)",
        figures={"plan": asdict(plan), "figures": figures, "targets": targets, "profiles": profiles},
        table=table,
        notes=notes,
        plots=[png],
        seconds=time.monotonic() - started,
    )


def result_name(plan: ServingPlan) -> str:
    """``serving``, with the runtime and CPU share when they are not the defaults."""
    runtime = "" if plan.runtime == "auto" else f"-{plan.runtime}"
    cpus = "" if plan.cpus_per_replica == 0.5 else f"-{plan.cpus_per_replica:g}cpu"
    return f"serving{runtime}{cpus}"


def _x(value: float | None, target: float | None = None) -> str:
    """A ratio; against a target with three decimals and the verdict, so that rounding never hides a miss."""
    if value is None or math.isnan(value):
        return "n/a"
    if target is None:
        return f"{value:.2f}x"
    return f"{value:.3f}x, {'met' if value >= target else 'not met'}"


def _table(figures: dict[str, Any], plan: ServingPlan) -> str:
    rows = []
    for name in plan.models:
        base, ours = figures[name]["FastAPI baseline"], figures[name]["trainserve"]
        for c in plan.concurrency:
            b, t = base[str(c)], ours[str(c)]
            ratio = t["rps"]["median"] / b["rps"]["median"] if b["rps"]["median"] else math.nan
            spread = ""
            if plan.repeats > 1:
                spread = f" (ours {t['rps']['min']:.0f}-{t['rps']['max']:.0f})"
            rows.append(
                [
                    name,
                    c,
                    f"{b['rps']['median']:.0f} / {b['p50']['median']:.1f} / {b['p99']['median']:.1f}",
                    f"{t['rps']['median']:.0f} / {t['p50']['median']:.1f} / {t['p99']['median']:.1f}",
                    f"{ratio:.2f}x{spread}",
                    f"{int(b['errors']['max'])} / {int(t['errors']['max'])}",
                ]
            )
        limit = figures[name]["in-process"]
        rows.append(
            [
                name,
                "in-process",
                f"{limit['rps']['median']:.0f} calls/s, p50 {limit['p50']['median']:.2f} ms",
                "",
                "",
                "",
            ]
        )
        if "shadow" in figures[name]:
            rows += shadow_rows(name, figures[name]["shadow"])
    return markdown_table(
        [
            "model",
            "c",
            "FastAPI req/s / p50 / p99 ms",
            "trainserve req/s / p50 / p99 ms",
            "ratio",
            "errors (base/ours)",
        ],
        rows,
    )


def baselines(model_figures: dict[str, Any]) -> list[str]:
    return [server for server in model_figures if server == FASTAPI or server.startswith("MLServer")]


def our_servers(model_figures: dict[str, Any]) -> list[str]:
    return [server for server in model_figures if server.startswith("trainserve")]


def best_baseline(model_figures: dict[str, Any], c: int) -> tuple[str, float]:
    """The baseline with the most requests/s at ``c`` connections (median over the repeats)."""
    rates = {server: model_figures[server][str(c)]["rps"]["median"] for server in baselines(model_figures)}
    best = max(rates, key=lambda server: rates[server])
    return best, rates[best]


def ratio_to_best(model_figures: dict[str, Any], server: str, c: int) -> float:
    _, best = best_baseline(model_figures, c)
    return float(model_figures[server][str(c)]["rps"]["median"] / best) if best else math.nan


def best_baseline_table(figures: dict[str, Any], plan: ServingPlan) -> str:
    """Per cell, the best baseline's req/s and each of our runtimes against it."""
    servers = sorted({server for name in plan.models for server in our_servers(figures[name])})
    rows = []
    for name in plan.models:
        for c in plan.concurrency:
            best, rate = best_baseline(figures[name], c)
            cells = [
                f"{figures[name][s][str(c)]['rps']['median']:.0f} ({_x(ratio_to_best(figures[name], s, c))})"
                if s in figures[name]
                else "n/a"
                for s in servers
            ]
            others = ", ".join(
                f"{b.removesuffix(' baseline')} {figures[name][b][str(c)]['rps']['median']:.0f}"
                for b in baselines(figures[name])
            )
            rows.append([name, c, others, f"{best}: {rate:.0f}", *cells])
    headers = ["model", "c", "baselines req/s", "best baseline req/s", *[f"{s} req/s (ratio)" for s in servers]]
    return markdown_table(headers, rows)


def _targets(figures: dict[str, Any]) -> dict[str, Any]:
    def ratio(model: str, c: int) -> float:
        if model not in figures or str(c) not in figures[model]["trainserve"]:
            return math.nan
        ours, base = figures[model]["trainserve"][str(c)], figures[model]["FastAPI baseline"][str(c)]
        return float(ours["rps"]["median"] / base["rps"]["median"])

    targets: dict[str, Any] = {"heavy_c32_ratio": ratio("heavy", 32), "heavy_c32_ratio_target": 5.0}
    targets |= {"digits_c1_ratio": ratio("digits", 1), "digits_c1_ratio_target": 0.85}
    if "heavy" in figures and "32" in figures["heavy"]["trainserve"]:
        ours, base = figures["heavy"]["trainserve"]["32"], figures["heavy"]["FastAPI baseline"]["32"]
        targets["heavy_c32_p99_lower"] = bool(ours["p99"]["median"] < base["p99"]["median"])
    targets["ratio_to_best_baseline"] = {
        server: {
            model: {c: ratio_to_best(cells, server, int(c)) for c in cells[FASTAPI]}
            for model, cells in figures.items()
            if server in cells
        }
        for server in {s for cells in figures.values() for s in our_servers(cells)}
    }
    return targets


def profile_notes(profiles: dict[str, Any], top: int = 6) -> list[str]:
    notes = []
    for server, profile in profiles.items():
        plain = profile.get("unprofiled", {})
        cpu = ", ".join(
            f"{p['name'].split(':')[0]} {p['ms']:.2f}" for p in profile.get("topProcesses", [])[:5] if p["ms"] >= 0.01
        )
        cpu += f"; whole machine {profile.get('cpuMsPerRequestByProcess', {}).get('whole machine (incl. wrk)', math.nan):.2f}"
        functions = ", ".join(f"`{f['function']}` {f['share']:.0%}" for f in profile["self"][:top])
        notes.append(
            f"digits c=1, {server}: {plain.get('rps', 0):.0f} req/s, p50 {plain.get('p50', math.nan):.2f} ms; CPU ms "
            f"per request: {cpu}; py-spy ({profile['file']}) top self time: {functions}"
        )
    return notes


def plot(figures: dict[str, Any], concurrency: list[int], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(figures), figsize=(5.5 * len(figures), 8), squeeze=False)
    for column, model in enumerate(sorted(figures)):
        for server, series in figures[model].items():
            if server == "in-process":
                axes[0][column].axhline(
                    series["rps"]["median"], linestyle=":", color="grey", label="in-process (1 row per call)"
                )
                continue
            for row, key in ((0, "rps"), (1, "p99")):
                median = [series[str(c)][key]["median"] for c in concurrency]
                low = [series[str(c)][key]["min"] for c in concurrency]
                high = [series[str(c)][key]["max"] for c in concurrency]
                (line,) = axes[row][column].plot(concurrency, median, marker="o", label=server)
                axes[row][column].fill_between(concurrency, low, high, alpha=0.2, color=line.get_color())
        axes[0][column].set_title(f"{model}: requests/second (median, band min-max)")
        axes[1][column].set_title(f"{model}: p99 latency, ms (log)")
        for row in (0, 1):
            axes[row][column].set_xscale("log", base=2)
            axes[row][column].set_xticks(concurrency, [str(c) for c in concurrency])
            axes[row][column].set_xlabel("concurrent connections")
            axes[row][column].legend()
        plain_log_axis(axes[1][column])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 32, 3 s runs, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", help="override the connection counts")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--profile", action="store_true", help="py-spy both digits servers during a c=1 run")
    parser.add_argument("--no-shadow", action="store_true", help="skip the c=32 runs with a shadow candidate")
    parser.add_argument(
        "--runtime",
        choices=("auto", "tensorflow"),
        default="auto",
        help="the ModelService's spec.runtime; tensorflow: the SavedModel as the baseline calls it",
    )
    parser.add_argument("--only-runtime", action="store_true", help="only --runtime (default: also tensorflow)")
    parser.add_argument("--cpus-per-replica", type=float, default=0.5, help="ours; 2: the baselines' budget here")
    parser.add_argument("--no-mlserver", action="store_true", help="skip the MLServer baselines")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    plan = ServingPlan.quick() if args.quick else ServingPlan.full()
    plan.models = args.models
    plan.concurrency = args.concurrency or plan.concurrency
    plan.repeats = args.repeats or plan.repeats
    plan.duration = args.duration or plan.duration
    plan.profile_seconds = 10.0 if args.profile and "digits" in plan.models else 0.0
    plan.runtime = args.runtime
    plan.also_runtimes = [] if args.runtime == "tensorflow" or args.only_runtime else ["tensorflow"]
    plan.mlserver_workers = [] if args.no_mlserver else plan.mlserver_workers
    plan.cpus_per_replica = args.cpus_per_replica
    plan.shadow = not args.no_shadow

    from .models import build

    date = stamp()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        models, limits = build(plan.models, work / "models", plan.in_process_seconds, plan.repeats)
        section = measure(plan, models, limits, work, f"{date}-")
    path = write_results(result_name(plan), section.figures, section.markdown())
    print(section.markdown())
    print(f"\nwritten: {path}, {section.plots[0]}")


if __name__ == "__main__":
    main()
