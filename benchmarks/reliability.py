"""Reliability, measured: overload shed with and without a bounded queue, a serving replica killed under load,
and a training worker killed mid-run (restarted in the same Ray cluster from the last checkpoint).

Load comes from asyncio clients (aiohttp) that record each request's status and latency, so accepted and refused
requests are told apart (wrk reports only their mix). Overload is open-loop: requests arrive at twice the rate
the replica sustains whatever the answers, as from many independent users; a closed loop of C clients would
only ever wait C deep, however long the queue may grow.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from trainserve_workloads.lifecycle import descendants

from .harness import Section, markdown_table, percentile, progress
from .models import FEATURES
from .serving import LocalServer, body, modelservice

#: A request the client could not complete (connection refused or reset, timeout): status 0.
FAILED = 0


@dataclass
class ReliabilityPlan:
    overload_factor: float = 2.0  # arrival rate over the sustained rate
    overload_connections: int = 2000
    overload_seconds: float = 15.0
    kill_concurrency: int = 32
    kill_seconds: float = 30.0
    training_epochs: int = 12

    @classmethod
    def quick(cls) -> ReliabilityPlan:
        return cls(overload_seconds=6.0, kill_seconds=15.0, training_epochs=8)

    @classmethod
    def full(cls) -> ReliabilityPlan:
        return cls()


async def _post(session: aiohttp.ClientSession, url: str, payload: str) -> int:
    """One JSON POST's status; :data:`FAILED` when it could not be completed."""
    try:
        async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as reply:
            await reply.read()
            return reply.status
    except (TimeoutError, aiohttp.ClientError):
        return FAILED


async def _drive(url: str, payload: str, concurrency: int, seconds: float) -> list[tuple[float, float, int]]:
    """(start, latency, status) of every request, C at a time for ``seconds``."""
    results: list[tuple[float, float, int]] = []
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def worker() -> None:
            while (started := time.monotonic()) < deadline:
                status = await _post(session, url, payload)
                if status == FAILED:
                    await asyncio.sleep(0.05)  # a refused connection returns at once: do not spin
                results.append((started, time.monotonic() - started, status))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def drive(url: str, payload: str, concurrency: int, seconds: float) -> list[tuple[float, float, int]]:
    return asyncio.run(_drive(url, payload, concurrency, seconds))


async def _arrive(
    url: str, payload: str, rate: float, seconds: float, connections: int
) -> list[tuple[float, float, int]]:
    """(start, latency, status) of requests sent at ``rate`` per second for ``seconds``, whatever the answers."""
    results: list[tuple[float, float, int]] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=timeout) as session:

        async def one() -> None:
            started = time.monotonic()
            status = await _post(session, url, payload)
            results.append((started, time.monotonic() - started, status))

        tasks = []
        begin = time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return results


def arrive(url: str, payload: str, rate: float, seconds: float, connections: int) -> list[tuple[float, float, int]]:
    return asyncio.run(_arrive(url, payload, rate, seconds, connections))


def _replicas(server: LocalServer) -> dict[int, str]:
    """The model replicas' pids (Serve names their processes ``ray::ServeReplica:APP:DEPLOYMENT``)."""
    titles = {pid: _title(pid) for pid in descendants(server.process.pid)}
    return {pid: t for pid, t in titles.items() if t.startswith("ray::ServeReplica") and t.endswith(":ModelServer")}


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    return total / 1024


def _load_figures(results: list[tuple[float, float, int]], seconds: float) -> dict[str, float]:
    accepted = [latency for _, latency, status in results if status == 200]
    refused = [latency for _, latency, status in results if status == 503]
    first = min((begun for begun, _, _ in results), default=0.0)
    late = [latency for begun, latency, status in results if status == 200 and begun - first >= seconds - 1]
    return {
        "accepted_p99_last_second_ms": percentile(late, 99) * 1000 if late else 0.0,
        "accepted_rps": len(accepted) / seconds,
        "refused_share": len(refused) / max(len(results), 1),
        "failed": float(sum(1 for _, _, status in results if status not in (200, 503))),
        "accepted_p50_ms": percentile(accepted, 50) * 1000 if accepted else 0.0,
        "accepted_p99_ms": percentile(accepted, 99) * 1000 if accepted else 0.0,
        "refused_p99_ms": percentile(refused, 99) * 1000 if refused else 0.0,
    }


def overload(plan: ReliabilityPlan, model: str, work: Path) -> dict[str, dict[str, float]]:
    """Twice the sustainable rate at the heavy model: the default bounded queue against an unbounded one."""
    figures: dict[str, dict[str, float]] = {}
    for label, queued in (("bounded queue (default)", None), ("unbounded queue", 100000)):
        spec = {"overload": {"maxQueuedRequests": queued}} if queued else {}
        server = LocalServer(modelservice("heavy", model, **spec), work)
        try:
            server.wait_ready()
            url, payload = f"{server.url}/v1/models/heavy:predict", body(FEATURES["heavy"])
            sustained = sum(1 for *_, status in drive(url, payload, 32, 3.0) if status == 200) / 3.0
            rate = plan.overload_factor * sustained
            replicas = list(_replicas(server))
            before = _rss_mib(replicas)
            results = arrive(url, payload, rate, plan.overload_seconds, plan.overload_connections)
            figures[label] = _load_figures(results, plan.overload_seconds) | {
                "offered_rps": rate,
                "replica_rss_growth_mib": _rss_mib(replicas) - before,
            }
        finally:
            server.stop()
    return figures


def replica_kill(plan: ReliabilityPlan, model: str, work: Path) -> dict[str, float]:
    """Two replicas under c=32; one is SIGKILLed a third of the way in. Failed requests, and the seconds until
    the accepted rate is back to 90% of what it was before the kill."""
    server = LocalServer(modelservice("heavy", model, replicas=2), work)
    try:
        server.wait_ready()
        url, payload = f"{server.url}/v1/models/heavy:predict", body(FEATURES["heavy"])
        drive(url, payload, 8, 2.0)
        victim = max(_replicas(server))
        started = time.monotonic()
        kill_at = plan.kill_seconds / 3

        def kill() -> None:
            time.sleep(kill_at)
            os.kill(victim, signal.SIGKILL)

        threading.Thread(target=kill, daemon=True).start()
        results = drive(url, payload, plan.kill_concurrency, plan.kill_seconds)
    finally:
        server.stop()
    return _recovery(results, started, kill_at)


def _recovery(results: list[tuple[float, float, int]], started: float, kill_at: float) -> dict[str, float]:
    per_second: dict[int, int] = {}
    for begun, latency, status in results:
        if status == 200:
            second = int(begun + latency - started)
            per_second[second] = per_second.get(second, 0) + 1
    before = [per_second.get(s, 0) for s in range(1, int(kill_at))]
    baseline = sum(before) / max(len(before), 1)
    last = max(per_second, default=0)
    recovered = next(
        (
            s
            for s in range(int(kill_at), last + 1)
            if all(per_second.get(t, 0) >= 0.9 * baseline for t in range(s, last))
        ),
        None,
    )
    return {
        "requests": float(len(results)),
        "failed": float(sum(1 for _, _, status in results if status != 200)),
        "rps_before_kill": baseline,
        "seconds_to_full_rate": float(recovered - kill_at) if recovered is not None else float("nan"),
    }


def worker_kill(plan: ReliabilityPlan) -> dict[str, dict[str, float]]:
    """The digits job on two workers, undisturbed and with a worker SIGKILLed after its second checkpoint."""
    figures = {}
    for label, kill in (("undisturbed", False), ("worker killed after epoch 2", True)):
        with tempfile.TemporaryDirectory() as folder:
            figures[label] = _train(Path(folder), plan.training_epochs, kill)
    return figures


def _train(folder: Path, epochs: int, kill: bool) -> dict[str, float]:
    document = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples/digits-trainingjob.yaml").read_text())
    spec = document["spec"]
    spec["output"]["uri"] = str(folder / "models")
    spec["training"]["epochs"] = epochs
    spec["checkpoint"] = {"everyEpochs": 1, "keep": 100}
    spec["runPolicy"] = {"workerRestarts": 1}
    (folder / "job.yaml").write_text(yaml.safe_dump(document))
    started = time.monotonic()
    command = [sys.executable, "-m", "trainserve.cli", "local", "train", "-f", "job.yaml", "--no-progress"]
    run = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill:
        while not (folder / "models" / "checkpoints" / "epoch-000002").is_dir() and run.poll() is None:
            time.sleep(0.1)
        workers = [pid for pid in descendants(run.pid) if _title(pid).startswith("ray::RayTrainWorker")]
        if workers:
            os.kill(max(workers), signal.SIGKILL)
    output, _ = run.communicate(timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"training failed:\n{output[-2000:]}")
    card = json.loads((folder / "models" / "1" / "model.json").read_text())
    return {
        "wall_seconds": time.monotonic() - started,
        "worker_restarts": float(card.get("workerRestarts", 0)),
        "epochs_rerun": float(card.get("epochsRerun", 0)),
        "val_accuracy": float(card["metrics"]["val_accuracy"]),
    }


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def measure(plan: ReliabilityPlan, heavy_model: str, work: Path) -> Section:
    progress("   overload: twice the sustained rate at the heavy model, bounded and unbounded queue")
    shed = overload(plan, heavy_model, work)
    progress("   a serving replica killed under load")
    killed = replica_kill(plan, heavy_model, work)
    progress("   a training worker killed mid-run")
    trained = worker_kill(plan)
    figures: dict[str, Any] = {"overload": shed, "replica_kill": killed, "worker_kill": trained}
    return Section(name="reliability", title="Reliability", figures=figures, table=_table(figures, plan))


def _table(figures: dict[str, Any], plan: ReliabilityPlan) -> str:
    rows = [
        [
            f"overload: {f['offered_rps']:.0f} req/s offered ({plan.overload_factor:g}x sustained), {label}",
            f"{f['accepted_rps']:.0f} req/s accepted, {f['refused_share']:.0%} refused (503), {f['failed']:.0f} failed",
            f"accepted p50 {f['accepted_p50_ms']:.0f} ms, p99 {f['accepted_p99_ms']:.0f} ms "
            f"(last second {f['accepted_p99_last_second_ms']:.0f} ms); "
            f"503 p99 {f['refused_p99_ms']:.0f} ms; replica RSS +{f['replica_rss_growth_mib']:.0f} MiB",
        ]
        for label, f in figures["overload"].items()
    ]
    k = figures["replica_kill"]
    rows.append(
        [
            f"1 of 2 replicas SIGKILLed at c={plan.kill_concurrency}",
            f"{k['failed']:.0f} of {k['requests']:.0f} requests failed",
            f"{k['rps_before_kill']:.0f} req/s before; full rate again after {k['seconds_to_full_rate']:.1f} s",
        ]
    )
    for label, t in figures["worker_kill"].items():
        rows.append(
            [
                f"training, 2 workers, {plan.training_epochs} epochs, {label}",
                f"{t['wall_seconds']:.0f} s wall, val_accuracy {t['val_accuracy']:.3f}",
                f"{t['worker_restarts']:.0f} restarts, {t['epochs_rerun']:.0f} epochs trained again",
            ]
        )
    return markdown_table(["case", "outcome", "detail"], rows)
