"""Operator at scale: many TrainingJobs against an emulated API server, the operator in its own process.

The API server is kmock's ``KubernetesEmulator`` (with what ``tests.support.kubesim`` adds: uids, resource
versions, our resources and KubeRay's RayJob registered), served over HTTP from this process. The operator runs in
its own process as `trainserve run --all-namespaces --standalone` would (``benchmarks.operator_process``: the same
settings and ``trainserve.runner.run``, plus the emulator's URL; ``--via-cli`` runs the command itself with a
kubeconfig file). The emulator
timestamps every request as it is served, so latencies need no polling:

1. **create**: N TrainingJobs are created (8 requests in flight); create-to-RayJob latency per job, and the time
   until every RayJob exists;
2. **running**: a simulated KubeRay patches every RayJob's status to Initializing, then Running; latency from
   the Running patch to the TrainingJob's ``status.phase: Running``;
3. **complete**: the same with ``Complete``/``SUCCEEDED`` -> ``status.phase: Succeeded``.

Per phase also: requests the operator made (Kopf's and the controller's), reconciles (the operator's
``trainserve_reconcile_duration_seconds`` count on its metrics port) and their ratio, writes per job, CPU of the
operator and of this process (the emulator: if it nears one full core it is the bottleneck), and at the end the
operator's peak memory (VmHWM).

    python -m benchmarks.operator_scale [--quick] [--jobs 100 1000] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import attrs
import kmock

from tests.support.documents import example
from tests.support.kubesim import RAYJOBS, TRAININGJOBS, Cluster, Emulator, register
from trainserve_workloads.lifecycle import free_port

from .harness import (
    REPO,
    RESULTS,
    Section,
    fmt,
    markdown_table,
    percentile,
    plain_log_axis,
    process_cpu_seconds,
    process_memory_peak_mib,
    progress,
    pyplot,
    stamp,
    stop_process,
    summarize,
    write_results,
)

PHASES = ("create", "running", "complete")
IN_FLIGHT = 8  # requests the benchmark keeps in flight when it creates or patches objects
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class OperatorPlan:
    jobs: list[int] = field(default_factory=lambda: [100, 1000])
    repeats: int = 2
    phase_timeout: float = 300.0
    fast_lookup: bool = True  # O(1) object lookups in the emulator (see RecordingEmulator)
    via_cli: bool = False  # `trainserve run` + KUBECONFIG instead of benchmarks.operator_process

    @classmethod
    def quick(cls) -> OperatorPlan:
        return cls(jobs=[100], repeats=1, phase_timeout=120.0)

    @classmethod
    def full(cls) -> OperatorPlan:
        return cls()


def agent_of(user_agent: str) -> str:
    """Who made a request: ``benchmark`` (kmock's own client), ``kopf`` (watches), ``client`` (the controller)."""
    if user_agent.startswith("kmock/"):
        return "benchmark"
    if user_agent.lower().startswith("kopf"):
        return "kopf"
    return "client"


class _DirectDispatch(kmock.RawHandler):  # type: ignore[misc]
    """Serves a request on a known resource with the emulator's own handler for its action (list, watch, get,
    create, patch, delete) at once, instead of matching it against every reaction. Sits after the emulator's
    ``_handle`` (which applies the change to the stored objects) and before kmock's matching."""

    __slots__ = ()

    async def _handle(self, request: kmock.Request) -> Any:
        direct: dict[Any, Any] = getattr(self, "_direct", {})
        resource = request.resource
        if resource is not None and resource.plural and request.action in direct:
            return await direct[request.action](request)
        return await super()._handle(request)


@attrs.define(kw_only=True)
class RecordingEmulator(Emulator, _DirectDispatch):
    """The test suite's emulator, timestamping what the benchmark needs as each request is served.

    kmock, made for tests, does per request work that grows with the run: it matches the request against each
    reaction by walking the requests kept so far, and it finds an object by scanning every stored object. With
    thousands of requests and objects the emulator, not the operator, becomes the slow side (measured: 100 jobs
    took 83 s to get their RayJobs, the emulator's process at 0.99 of a core, the operator at 0.02). With
    ``fast_lookup``: requests on known resources go straight to the emulator's handler for their action
    (``_DirectDispatch``), served requests leave kmock's history (our log keeps what we need), and get, create,
    patch and delete look the object up by its key. The answers are the same.
    """

    fast_lookup: bool = True
    log: list[tuple[float, str, str, str, str, int]] = attrs.field(factory=list, init=False)
    created: dict[str, float] = attrs.field(factory=dict, init=False)  # TrainingJob -> created
    rayjob_created: dict[str, float] = attrs.field(factory=dict, init=False)  # TrainingJob -> its RayJob created
    rayjob_status: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)  # (RayJob, state) -> t
    phase_seen: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)  # (TrainingJob, phase) -> t
    handling: list[float] = attrs.field(factory=list, init=False)  # seconds per non-watch request
    _direct: dict[Any, Any] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.fast_lookup:
            serve = {
                kmock.action.LIST: self._serve_list,
                kmock.action.WATCH: self._serve_watch,
                kmock.action.FETCH: self._serve_fetch,
                kmock.action.CREATE: self._serve_create,
                kmock.action.UPDATE: self._serve_update,
                kmock.action.DELETE: self._serve_delete,
            }
            # rendered as kmock renders its fallback reactions for these actions
            self._direct = {action: kmock.Response() + kmock.Response.guess(fn) for action, fn in serve.items()}

    async def _handle(self, request: kmock.Request) -> Any:
        started = time.perf_counter()
        agent = agent_of(str(request.headers.get("User-Agent", "")))
        method = str(request.method.value).upper()
        action = str(request.action.value) if request.action is not None else ""
        resource = str(request.resource) if request.resource is not None else str(request.url.path)
        watch = action == "WATCH"
        if watch:  # a stream: logged when it opens
            self.log.append((time.time(), agent, method, action, resource, 0))
        try:
            response = await super()._handle(request)
        finally:
            if self.fast_lookup:
                self._forget(request)
        now = time.time()
        if not watch:
            self.handling.append(time.perf_counter() - started)
            self.log.append((now, agent, method, action, resource, int(response.status)))
            if response.status < 300:
                self._note(request, agent, now)
        return response

    def _note(self, request: kmock.Request, agent: str, now: float) -> None:
        resource = str(request.resource)
        data = request.data if isinstance(request.data, dict) else {}
        if request.action == kmock.action.CREATE and resource == str(kmock.resource(TRAININGJOBS)):
            self.created.setdefault(data["metadata"]["name"], now)
        elif request.action == kmock.action.CREATE and resource == str(kmock.resource(RAYJOBS)):
            owner = (data["metadata"].get("labels") or {}).get("trainserve.io/trainingjob")
            if owner:
                self.rayjob_created.setdefault(owner, now)
        elif request.action == kmock.action.UPDATE and request.subresource == "status":
            if resource == str(kmock.resource(RAYJOBS)) and agent == "benchmark":
                state = (data.get("status") or {}).get("jobDeploymentStatus")
                self.rayjob_status.setdefault((str(request.name), str(state)), now)
            elif resource == str(kmock.resource(TRAININGJOBS)) and agent != "benchmark":
                stored = self._stored(request) or {}
                phase = (stored.get("status") or {}).get("phase")
                if phase:
                    self.phase_seen.setdefault((str(request.name), str(phase)), now)

    # --- O(1) per request instead of O(requests so far) and O(objects) ------------------------------------

    def _forget(self, request: kmock.Request) -> None:
        """Drop a served request from kmock's history (the handler's and its reactions'): kmock matches each new
        request against its reactions by walking every request kept, so serving slows down as the history grows. Our log has what the
        benchmark needs; requests still being matched or streamed stay."""
        with contextlib.suppress(ValueError):
            self._requests.remove(request)
        for reaction in self._payloads:  # each reaction keeps the requests it served, too
            with contextlib.suppress(ValueError):
                reaction._requests.remove(request)

    def _lookup(self, request: kmock.Request, name: str | None, namespace: str | None) -> Any:
        key = (request.resource, namespace, name)
        if key not in self.objects:
            return None
        return self.objects[key]

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        if not self.fast_lookup:
            return await super()._serve_fetch(request)
        obj = self._lookup(request, request.name, request.namespace)
        if obj is None or obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: kmock.Request) -> Any:
        if not self.fast_lookup:
            return await super()._serve_create(request)
        metadata = request.data.get("metadata", {})
        obj = self._lookup(request, metadata.get("name"), request.namespace or metadata.get("namespace"))
        return kmock.Response(status=201, payload=obj.raw)

    async def _serve_update(self, request: kmock.Request) -> Any:
        if not self.fast_lookup:
            return await super()._serve_update(request)
        return self._lookup(request, request.name, request.namespace).last.raw

    async def _serve_delete(self, request: kmock.Request) -> Any:
        if not self.fast_lookup:
            return await super()._serve_delete(request)
        return self._lookup(request, request.name, request.namespace).last.raw


# --- one run ------------------------------------------------------------------------------------------------


def kubeconfig(url: str, path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": url}}],
                "users": [{"name": "benchmark", "user": {"token": "benchmark"}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "benchmark"}}],
                "current-context": "emulator",
            }
        )
    )
    return path


def scrape_reconciles(port: int) -> float:
    """The operator's reconcile count (``trainserve_reconcile_duration_seconds_count``, all kinds)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^trainserve_reconcile_duration_seconds_count\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    )


def latency_stats(latencies: list[float]) -> dict[str, float]:
    return {
        "count": len(latencies),
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=math.nan),
    }


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _quiet(emulator: RecordingEmulator, seconds: float = 1.0, timeout: float = 60) -> None:
    """Until the operator has made no request for ``seconds`` (its trailing writes belong to the phase)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = max((entry[0] for entry in emulator.log if entry[1] != "benchmark"), default=0.0)
        if time.time() - last >= seconds:
            return
        await asyncio.sleep(0.1)


async def _in_flight(calls: list[Any], limit: int = IN_FLIGHT) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Any) -> None:
        async with semaphore:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


async def run_once(jobs: int, plan: OperatorPlan, work: Path) -> dict[str, Any]:
    """One operator process against one fresh emulator: the three phases for ``jobs`` TrainingJobs."""
    async with RecordingEmulator(fast_lookup=plan.fast_lookup) as emulator, kmock.Server(emulator) as server:
        register(emulator)
        cluster = Cluster(emulator)
        metrics_port = free_port()
        url = str(server.url).rstrip("/")
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        if plan.via_cli:
            env["KUBECONFIG"] = str(kubeconfig(url, work / "kubeconfig"))
            command = [sys.executable, "-m", "trainserve.cli", "run", "--all-namespaces", "--standalone"]
            command += ["--metrics-port", str(metrics_port)]
        else:
            command = [sys.executable, "-m", "benchmarks.operator_process", url, str(metrics_port)]
        with (work / f"operator-{jobs}.log").open("w") as log:
            operator = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            return await _phases(emulator, cluster, operator, metrics_port, jobs, plan)
        except BaseException:
            tail = (work / f"operator-{jobs}.log").read_text()[-3000:]
            print(f"operator log (tail):\n{tail}", file=sys.stderr)
            raise
        finally:
            stop_process(operator, timeout=30)


async def _phases(
    emulator: RecordingEmulator,
    cluster: Cluster,
    operator: subprocess.Popen[bytes],
    metrics_port: int,
    jobs: int,
    plan: OperatorPlan,
) -> dict[str, Any]:
    def watching() -> bool:
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.returncode}")
        streams = {entry[4] for entry in emulator.log if entry[3] == "WATCH" and entry[1] != "benchmark"}
        return str(kmock.resource(TRAININGJOBS)) in streams and str(kmock.resource(RAYJOBS)) in streams

    await _until(watching, 60, "the operator to watch TrainingJobs and RayJobs")
    await _until(lambda: _metrics_up(metrics_port), 30, "the operator's metrics")
    await _quiet(emulator)
    names = [f"job-{index:04d}" for index in range(jobs)]
    rayjob_names = {name: f"{name}-1" for name in names}
    document = example("digits-trainingjob")
    figures: dict[str, Any] = {"jobs": jobs}

    async def phase(label: str, act: Any, done: Any, latencies: Any) -> None:
        log_mark, handled_mark = len(emulator.log), len(emulator.handling)
        reconciles = await asyncio.to_thread(scrape_reconciles, metrics_port)
        cpu_operator, cpu_self = process_cpu_seconds(operator.pid), time.process_time()
        started = time.time()
        await act()
        submitted = time.time()
        await _until(done, plan.phase_timeout, f"{label}: every job")
        finished = time.time()
        await _quiet(emulator)
        wall = time.time() - started
        reconciles = await asyncio.to_thread(scrape_reconciles, metrics_port) - reconciles
        entries = emulator.log[log_mark:]
        ours = [e for e in entries if e[1] != "benchmark"]
        writes = [e for e in ours if e[2] in WRITES]
        values = latencies()
        handled = emulator.handling[handled_mark:]
        figures[label] = {
            "submit_s": submitted - started,
            "all_done_s": finished - started,
            "latency_s": latency_stats(values),
            "latencies": [round(v, 4) for v in values],
            "operator_requests": len(ours),
            "operator_requests_by": dict(Counter(f"{e[1]} {e[2]} {e[4].rsplit('/', 1)[-1]}" for e in ours)),
            "operator_errors": sum(1 for e in ours if e[5] >= 400),
            "reconciles": reconciles,
            "requests_per_reconcile": len(ours) / reconciles if reconciles else math.nan,
            "writes_per_job": len(writes) / jobs,
            "operator_cpu_share": (process_cpu_seconds(operator.pid) - cpu_operator) / wall,
            "emulator_cpu_share": (time.process_time() - cpu_self) / wall,
            "emulator_ms_per_request": 1000 * sum(handled) / len(handled) if handled else math.nan,
            "emulator_requests": len(handled),
        }

    async def create() -> None:
        await _in_flight(
            [lambda name=name: cluster.create_trainingjob({**document, "metadata": {"name": name}}) for name in names]
        )

    await phase(
        "create",
        create,
        lambda: len(emulator.rayjob_created) >= jobs,
        lambda: [emulator.rayjob_created[n] - emulator.created[n] for n in names],
    )

    async def kuberay(state: str, job: str, **extra: Any) -> None:
        await _in_flight(
            [
                lambda rayjob=rayjob: cluster.rayjob_status(rayjob, state, job, **extra)
                for rayjob in rayjob_names.values()
            ]
        )

    async def running() -> None:
        await kuberay("Initializing", "")
        await kuberay("Running", "RUNNING")

    await phase(
        "running",
        running,
        lambda: all((n, "Running") in emulator.phase_seen for n in names),
        lambda: [emulator.phase_seen[n, "Running"] - emulator.rayjob_status[rayjob_names[n], "Running"] for n in names],
    )

    async def complete() -> None:
        await kuberay("Complete", "SUCCEEDED", endTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    await phase(
        "complete",
        complete,
        lambda: all((n, "Succeeded") in emulator.phase_seen for n in names),
        lambda: [
            emulator.phase_seen[n, "Succeeded"] - emulator.rayjob_status[rayjob_names[n], "Complete"] for n in names
        ],
    )
    figures["operator_peak_mib"] = process_memory_peak_mib(operator.pid)
    figures["objects_stored"] = len(emulator.objects)
    assert all(cluster.status(n).get("phase") == "Succeeded" for n in names[:5])
    return figures


def _metrics_up(port: int) -> bool:
    try:
        scrape_reconciles(port)
        return True
    except OSError:
        return False


# --- the benchmark ------------------------------------------------------------------------------------------


def measure(plan: OperatorPlan, work: Path, prefix: str) -> Section:
    started = time.monotonic()
    runs: dict[int, list[dict[str, Any]]] = {}
    for jobs in plan.jobs:
        runs[jobs] = []
        for index in range(plan.repeats):
            progress(f"operator: {jobs} jobs, run {index + 1}/{plan.repeats}")
            runs[jobs].append(asyncio.run(run_once(jobs, plan, work)))
    figures = {str(jobs): summarise_runs(results) for jobs, results in runs.items()}
    rows = []
    for jobs in plan.jobs:
        f = figures[str(jobs)]
        for label in PHASES:
            p = f[label]
            rows.append(
                [
                    jobs if label == "create" else "",
                    {"create": "create -> RayJob", "running": "RayJob Running -> phase Running"}.get(
                        label, "RayJob Complete -> phase Succeeded"
                    ),
                    fmt(p["all_done_s"], 2),
                    f"{fmt(p['p50_ms'], 0)} / {fmt(p['p99_ms'], 0)}",
                    fmt(p["requests_per_reconcile"], 2),
                    fmt(p["writes_per_job"], 1),
                    f"{fmt(p['operator_cpu_share'], 2)} / {fmt(p['emulator_cpu_share'], 2)}",
                    fmt(f["operator_peak_mib"], 0) if label == "create" else "",
                ]
            )
    table = markdown_table(
        [
            "jobs",
            "phase",
            "s until all",
            "latency p50 / p99 ms",
            "requests per reconcile",
            "writes per job",
            "CPU cores: operator / emulator",
            "operator peak MiB",
        ],
        rows,
    )
    notes = [
        f"{plan.repeats} run(s) per size, each a fresh operator process and emulator; {IN_FLIGHT} requests in flight "
        "from the benchmark; medians (min-max) over the runs, latencies pooled over the runs' jobs.",
        "CPU cores = CPU seconds / wall seconds of the phase; the emulator (and the benchmark's clients) run on one "
        "asyncio loop in one process, so near 1.0 there means the emulator is the bottleneck."
        + ("" if plan.fast_lookup else " kmock's linear object lookups were left in place (--slow-emulator)."),
    ]
    png = RESULTS / f"{prefix}operator.png"
    plot(figures, plan, png)
    return Section(
        name="operator",
        title="Operator: TrainingJobs against an emulated API server",
        figures={"plan": asdict(plan), "figures": figures},
        table=table,
        notes=notes,
        plots=[png],
        seconds=time.monotonic() - started,
    )


def summarise_runs(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": results, "operator_peak_mib": summarize([r["operator_peak_mib"] for r in results])}
    for label in PHASES:
        phases = [r[label] for r in results]
        pooled = [v for p in phases for v in p["latencies"]]
        out[label] = {
            key: summarize([p[key] for p in phases])
            for key in (
                "all_done_s",
                "submit_s",
                "requests_per_reconcile",
                "writes_per_job",
                "operator_cpu_share",
                "emulator_cpu_share",
                "emulator_ms_per_request",
                "operator_requests",
                "reconciles",
            )
        }
        out[label]["p50_ms"] = summarize([p["latency_s"]["p50"] * 1000 for p in phases])
        out[label]["p99_ms"] = summarize([p["latency_s"]["p99"] * 1000 for p in phases])
        out[label]["pooled"] = {k: (v * 1000 if k != "count" else v) for k, v in latency_stats(pooled).items()}
    return out


def plot(figures: dict[str, Any], plan: OperatorPlan, path: Path) -> None:
    """Latency distributions (CDFs), one panel per phase, one line per number of jobs."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PHASES), figsize=(15, 4.5), sharey=True)
    titles = {
        "create": "TrainingJob created -> RayJob exists",
        "running": "RayJob Running -> TrainingJob Running",
        "complete": "RayJob Complete -> TrainingJob Succeeded",
    }
    for axis, label in zip(axes, PHASES, strict=True):
        for jobs in plan.jobs:
            pooled = sorted(v * 1000 for r in figures[str(jobs)]["runs"] for v in r[label]["latencies"])
            if not pooled:
                continue
            fractions = [(i + 1) / len(pooled) for i in range(len(pooled))]
            axis.step(pooled, fractions, where="post", label=f"{jobs} jobs (p99 {percentile(pooled, 99):.0f} ms)")
        axis.set_title(titles[label], fontsize=10)
        plain_log_axis(axis, "x")
        axis.set_xlabel("latency, ms (log)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("fraction of jobs")
    fig.suptitle("Operator latency distribution (all jobs of all runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 jobs, one run")
    parser.add_argument("--jobs", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--slow-emulator", action="store_true", help="keep kmock's linear object lookups")
    parser.add_argument("--via-cli", action="store_true", help="start the operator as `trainserve run` with KUBECONFIG")
    args = parser.parse_args()
    plan = OperatorPlan.quick() if args.quick else OperatorPlan.full()
    plan.jobs = args.jobs or plan.jobs
    plan.repeats = args.repeats or plan.repeats
    plan.fast_lookup = not args.slow_emulator
    plan.via_cli = args.via_cli
    with tempfile.TemporaryDirectory() as folder:
        section = measure(plan, Path(folder), f"{stamp()}-")
    path = write_results("operator", section.figures, section.markdown())
    print(section.markdown())
    print(f"\nwritten: {path}, {section.plots[0]}")


if __name__ == "__main__":
    main()
