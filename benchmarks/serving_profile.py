"""One serving cell profiled: the heavy model at 8 connections, trainserve (``runtime: tensorflow``, one replica at
a given CPU share) against MLServer with 2 workers, CPU per request by process (/proc) and a py-spy recording of
the process that runs the model.

    python -m benchmarks.serving_profile [--cpus 0.5 2] [--seconds 5] [--connections 8] [--model heavy]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import mlserver_baseline, pyspy
from .harness import RESULTS, Wrk, cpu_delta, cpu_snapshot, machine_busy_seconds, markdown_table, stamp, write_results
from .models import FEATURES, build
from .serving import LocalServer, body, modelservice


def descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, added = {root}, True
    while added:
        below = {pid for pid, parent in parents.items() if parent in found} - found
        found |= below
        added = bool(below)
    return found


def profile_load(
    url: str, request: tuple[str, str], pid: int | set[int], connections: int, seconds: float, output: Path
) -> dict[str, Any]:
    """A warm-up, a plain run (CPU per request by process and for the machine), then a run under py-spy of ``pid``
    (of a set of pids: the busiest)."""
    with Wrk(url + request[0], request[1]) as load:
        load.run(connections, 2)
        before, machine_before = cpu_snapshot(), machine_busy_seconds()
        plain = load.run(connections, seconds)
        requests = max(1, int(plain["requests"]))
        processes = cpu_delta(before, cpu_snapshot(), requests)
        machine_ms = (machine_busy_seconds() - machine_before) * 1000 / requests
        if isinstance(pid, set):
            pid = next(p["pid"] for p in cpu_delta(before, cpu_snapshot(), requests, top=1000) if p["pid"] in pid)
        recording = pyspy.Recording(pid, seconds, output)
        time.sleep(0.5)
        during = load.run(connections, seconds)
        folded = recording.finish(requests=int(during["requests"]))
    return {"load": plain, "profiled": during, "topProcesses": processes, "machineMsPerRequest": machine_ms} | folded


def ours(model_dir: str, name: str, cpus: float, args: argparse.Namespace, work: Path, prefix: str) -> dict[str, Any]:
    service = modelservice(name, model_dir, runtime="tensorflow")
    service["spec"]["resources"]["cpusPerReplica"] = cpus
    server = LocalServer(service, work)
    try:
        server.wait_ready()
        pid = server.replica_pids()[0]
        output = RESULTS / f"{prefix}profile-trainserve-tensorflow-{cpus:g}cpu.txt"
        request = (f"/v1/models/{name}:predict", body(FEATURES[name]))
        profiled = profile_load(server.url, request, pid, args.connections, args.seconds, output)
        time.sleep(1.5)  # the replica pushes its counts once a second
        with urllib.request.urlopen(f"{server.url}/v2/models/{name}/stats", timeout=10) as answer:
            stats = json.load(answer)
        return profiled | {"batchSizes": stats["batchSizes"], "lite": stats["roles"]["primary"].get("lite")}
    finally:
        server.stop()


def mlserver(
    model_dir: str, name: str, workers: int, args: argparse.Namespace, work: Path, prefix: str
) -> dict[str, Any]:
    server = mlserver_baseline.MLServer(mlserver_baseline.ensure_venv(), model_dir, name, workers, work)
    try:
        output = RESULTS / f"{prefix}profile-mlserver-{workers}w.txt"
        request = (f"/v2/models/{name}/infer", mlserver_baseline.v2_body(FEATURES[name]))
        return profile_load(
            server.url, request, descendants(server.process.pid), args.connections, args.seconds, output
        )
    finally:
        server.stop()


def mean_batch(sizes: dict[str, list[int]] | None) -> str:
    """The mean batch size from the replica's histogram (bucket upper bounds: an upper estimate)."""
    if not sizes or not sum(sizes["counts"]):
        return "n/a"
    bounds = [*sizes["bounds"], sizes["bounds"][-1]]
    return f"<= {sum(b * n for b, n in zip(bounds, sizes['counts'], strict=True)) / sum(sizes['counts']):.1f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for server, r in results.items():
        cpu = ", ".join(f"{p['name'].split(':')[0][:30]} {p['ms']:.2f}" for p in r["topProcesses"][:4])
        categories = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["categories"].items(), key=lambda kv: -kv[1])[:4])
        rows.append(
            [
                server,
                f"{r['load']['rps']:.0f} / {r['load']['p50']:.1f} / {r['load']['p99']:.1f}",
                f"{r['machineMsPerRequest']:.2f}",
                cpu,
                categories,
                mean_batch(r.get("batchSizes")),
            ]
        )
    headers = ["server", "req/s / p50 / p99 ms", "machine CPU ms/request", "CPU ms/request by process", "py-spy"]
    headers.append("mean batch")
    return markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=float, nargs="+", default=[0.5, 2.0], help="cpusPerReplica of ours")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--model", default="heavy", choices=sorted(FEATURES))
    parser.add_argument("--mlserver-workers", type=int, default=2)
    args = parser.parse_args()
    prefix = f"{stamp()}-"
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        uris, _ = build([args.model], work / "models")
        model_dir = uris[args.model]
        results[f"MLServer, {args.mlserver_workers} workers"] = mlserver(
            model_dir, args.model, args.mlserver_workers, args, work, prefix
        )
        for cpus in args.cpus:
            results[f"trainserve tensorflow, {cpus:g} CPU"] = ours(model_dir, args.model, cpus, args, work, prefix)
    markdown = table(results)
    path = write_results(f"serving-profile-{args.model}-c{args.connections}", {"figures": results}, markdown)
    print(markdown)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
