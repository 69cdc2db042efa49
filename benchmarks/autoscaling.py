"""Autoscaling: a step load against a ModelService with `autoscaling: {minReplicas: 1, maxReplicas: 4}`.

The service runs as `trainserve local serve` runs it (``benchmarks.serve_driver`` makes the same calls; in the
whole run it is the serving benchmark's heavy-model service, changed in place to autoscale), with short up/downscale delays and a small target of ongoing requests, serving the
compute-heavy model at 0.5 CPU per replica. The load is `wrk` in back-to-back runs of one second: a light
phase (c=1), the step (c=32 for a while), then nothing. The driver samples Serve's replica counts by state
(``serve.status()``) every half second.

Figures per step: seconds from the step's start until Serve starts a second replica (``decided``) and until it
runs (``running``), the most replicas seen, p99 during the step (median and worst one-second window), and
seconds from the end of the load until only ``minReplicas`` remain.

    python -m benchmarks.autoscaling [--quick] [--repeats N] [--step S]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .harness import (
    RESULTS,
    Section,
    Wrk,
    fmt,
    markdown_table,
    plain_log_axis,
    progress,
    pyplot,
    stamp,
    summarize,
    write_results,
)
from .serving import ROWS, LocalServer, body, modelservice

STOPPED = {"STOPPING", "STOPPED"}


@dataclass
class AutoscalingPlan:
    model: str = "heavy"
    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float = 4
    upscale_delay_seconds: float = 2
    downscale_delay_seconds: float = 5
    cpus_per_replica: float = 0.5
    connections: int = 32
    light_seconds: float = 3  # c=1 before the step: the p99 of an idle service
    step_seconds: float = 40
    settle_timeout: float = 120  # longest wait for the return to minReplicas
    repeats: int = 2

    @classmethod
    def quick(cls) -> AutoscalingPlan:
        return cls(light_seconds=2, step_seconds=15, settle_timeout=60, repeats=1)

    @classmethod
    def full(cls) -> AutoscalingPlan:
        return cls()

    def spec(self) -> dict[str, Any]:
        return {
            "autoscaling": {
                "minReplicas": self.min_replicas,
                "maxReplicas": self.max_replicas,
                "targetOngoingRequests": self.target_ongoing_requests,
                "upscaleDelaySeconds": self.upscale_delay_seconds,
                "downscaleDelaySeconds": self.downscale_delay_seconds,
            },
            "resources": {"cpusPerReplica": self.cpus_per_replica, "memoryPerReplica": "2Gi"},
        }


# --- pure analysis ------------------------------------------------------------------------------------------


def counts(sample: dict[str, Any]) -> tuple[int, int]:
    """(running replicas, replicas that are not stopping: running + starting + ...) of one sample."""
    states = sample.get("states") or {}
    return int(states.get("RUNNING", 0)), sum(int(n) for state, n in states.items() if state not in STOPPED)


def analyse_step(
    samples: list[dict[str, Any]],
    windows: list[dict[str, float]],
    step_start: float,
    step_end: float,
    min_replicas: int,
) -> dict[str, Any]:
    """Scaling figures of one step from replica samples and per-window load results (all times: epoch s)."""
    live = [s for s in samples if "states" in s]
    decided = next((s["t"] - step_start for s in live if s["t"] >= step_start and counts(s)[1] > min_replicas), None)
    up = next((s["t"] - step_start for s in live if s["t"] >= step_start and counts(s)[0] > min_replicas), None)
    during = [s for s in live if step_start <= s["t"] <= step_end]
    peak = max((counts(s)[0] for s in during), default=0)
    after = [s for s in live if s["t"] >= step_end]
    peak_after = max((counts(s)[0] for s in after), default=0)
    back = None
    if max(peak, peak_after) > min_replicas:
        back = next(
            (s["t"] - step_end for s in after if counts(s)[0] == min_replicas and counts(s)[1] == min_replicas), None
        )
    in_step = [w for w in windows if w["start"] >= step_start and w["end"] <= step_end + 0.5]
    p99s = [w["p99"] for w in in_step if not math.isnan(w["p99"])]
    light = [w["p99"] for w in windows if w["end"] <= step_start and not math.isnan(w["p99"])]
    requests = sum(w["requests"] for w in in_step)
    seconds = sum(w["end"] - w["start"] for w in in_step)
    return {
        "decided_s": decided,
        "up_s": up,
        "peak_replicas": max(peak, peak_after),
        "back_to_min_s": back,
        "p99_light_ms": statistics.median(light) if light else math.nan,
        "p99_step_median_ms": statistics.median(p99s) if p99s else math.nan,
        "p99_step_max_ms": max(p99s) if p99s else math.nan,
        "rps_step": requests / seconds if seconds else math.nan,
        "errors": int(sum(w["errors"] for w in in_step)),
    }


def read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


# --- the run ------------------------------------------------------------------------------------------------


def _windows(load: Wrk, connections: int, seconds: float, phase: str) -> list[dict[str, float]]:
    """Back-to-back one-second wrk runs for ``seconds``; one record per run."""
    out = []
    end = time.time() + seconds
    while time.time() < end - 0.5:
        start = time.time()
        result = load.run(connections, 1)
        out.append(result | {"start": start, "end": time.time(), "connections": connections, "phase": phase})
    return out


def _wait_for(samples: Path, predicate: Any, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        latest = read_samples(samples)
        if latest and "states" in latest[-1] and predicate(latest[-1]):
            return True
        time.sleep(0.5)
    return False


def measure(
    plan: AutoscalingPlan, model_dir: str, work: Path, prefix: str, server: LocalServer | None = None
) -> Section:
    """The steps against a new service, or against ``server`` (a running one of the same model, handed over by
    the serving benchmark) after applying the autoscaling spec to it in place."""
    started = time.monotonic()
    name = plan.model
    service = modelservice(name, model_dir, **plan.spec())
    if server is not None and server.name != name:
        server.stop()
        server = None
    progress(f"autoscaling: {'starting' if server is None else 'updating'} the ModelService")
    if server is None:
        server = LocalServer(service, work)
        server.wait_ready()
    else:
        server.update(service)
    samples_file = work / f"replica-samples-{time.monotonic_ns()}.jsonl"
    steps: list[dict[str, Any]] = []
    try:
        server.sample(samples_file)
        with Wrk(f"{server.url}/v1/models/{name}:predict", body(ROWS[name])) as load:
            load.run(1, 2)  # warm-up: TensorFlow traces the model
            for index in range(plan.repeats):
                progress(f"autoscaling: step {index + 1}/{plan.repeats} once at {plan.min_replicas} replica(s)")
                minimal = _wait_for(
                    samples_file, lambda s: counts(s) == (plan.min_replicas, plan.min_replicas), plan.settle_timeout
                )
                if not minimal:
                    raise RuntimeError(f"the service did not settle at {plan.min_replicas} replica(s)")
                windows = _windows(load, 1, plan.light_seconds, "light")
                step_start = time.time()
                windows += _windows(load, plan.connections, plan.step_seconds, "step")
                step_end = time.time()
                progress("autoscaling: load stopped, waiting for the return to minReplicas")
                _wait_for(
                    samples_file,
                    lambda s, since=step_end: s["t"] > since and counts(s) == (plan.min_replicas, plan.min_replicas),
                    plan.settle_timeout,
                )
                time.sleep(1.0)  # a sample or two at the minimum, for the plot
                samples = [s for s in read_samples(samples_file) if s["t"] >= step_start - plan.light_seconds - 1]
                figures = analyse_step(samples, windows, step_start, step_end, plan.min_replicas)
                steps.append(
                    {
                        "figures": figures,
                        "step_start": step_start,
                        "step_end": step_end,
                        "windows": windows,
                        "samples": samples,
                    }
                )
    except Exception:
        print(f"serve driver log (tail):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()

    keys = ("decided_s", "up_s", "peak_replicas", "back_to_min_s", "p99_light_ms", "p99_step_median_ms")
    keys += ("p99_step_max_ms", "rps_step", "errors")
    summary = {k: summarize([s["figures"][k] for s in steps if s["figures"][k] is not None]) for k in keys}
    never_back = sum(1 for s in steps if s["figures"]["back_to_min_s"] is None)
    rows = [
        [
            f"{name}, {plan.min_replicas}-{plan.max_replicas} replicas, c={plan.connections} for {plan.step_seconds:g} s",
            fmt(summary["decided_s"], 1),
            fmt(summary["up_s"], 1),
            fmt(summary["peak_replicas"]),
            f"{fmt(summary['p99_light_ms'], 1)} / {fmt(summary['p99_step_median_ms'], 0)} / "
            f"{fmt(summary['p99_step_max_ms'], 0)}",
            fmt(summary["rps_step"]),
            fmt(summary["back_to_min_s"], 1)
            + (f" ({never_back} not within {plan.settle_timeout:g} s)" * (never_back > 0)),
            fmt(summary["errors"]),
        ]
    ]
    table = markdown_table(
        [
            "service, step",
            "s to 2nd replica started",
            "s to 2nd replica running",
            "most replicas",
            "p99 ms: light / step median / step worst 1 s",
            "req/s in step",
            "s after load to min",
            "errors",
        ],
        rows,
    )
    notes = [
        f"{plan.repeats} step(s); targetOngoingRequests {plan.target_ongoing_requests:g}, upscale/downscale delay "
        f"{plan.upscale_delay_seconds:g}/{plan.downscale_delay_seconds:g} s, {plan.cpus_per_replica:g} CPU per "
        "replica; Serve's own defaults for what the ModelService does not set (metrics look-back 30 s, "
        "replica metrics pushed every 10 s).",
    ]
    png = RESULTS / f"{prefix}autoscaling.png"
    plot(steps, plan, png)
    return Section(
        name="autoscaling",
        title="Autoscaling: step load against minReplicas 1, maxReplicas 4",
        figures={"plan": asdict(plan), "summary": summary, "steps": steps},
        table=table,
        notes=notes,
        plots=[png],
        seconds=time.monotonic() - started,
    )


def plot(steps: list[dict[str, Any]], plan: AutoscalingPlan, path: Path) -> None:
    plt = pyplot()
    fig, (replicas, latency) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    throughput = latency.twinx()
    for index, step in enumerate(steps):
        origin = step["step_start"]
        live = [s for s in step["samples"] if "states" in s]
        times = [s["t"] - origin for s in live]
        color = f"C{index}"
        replicas.step(
            times, [counts(s)[0] for s in live], where="post", color=color, label=f"step {index + 1}: running"
        )
        replicas.step(
            times,
            [counts(s)[1] for s in live],
            where="post",
            linestyle="--",
            color=color,
            alpha=0.6,
            label=f"step {index + 1}: running + starting",
        )
        mids = [(w["start"] + w["end"]) / 2 - origin for w in step["windows"]]
        latency.plot(mids, [w["p99"] for w in step["windows"]], marker=".", color=color, label=f"step {index + 1}: p99")
        throughput.plot(mids, [w["rps"] for w in step["windows"]], linestyle=":", color=color, alpha=0.7,
                        label=f"step {index + 1}: req/s")  # fmt: skip
    span = max((s["step_end"] - s["step_start"] for s in steps), default=plan.step_seconds)
    for axis in (replicas, latency):
        axis.axvspan(
            0, span, color="orange", alpha=0.12, label=f"load: c={plan.connections}" if axis is replicas else None
        )
    replicas.legend(loc="upper right", fontsize=8)
    handles, labels = latency.get_legend_handles_labels()
    more, more_labels = throughput.get_legend_handles_labels()
    latency.legend(handles + more, labels + more_labels, loc="upper right", fontsize=8)
    replicas.set_ylabel("replicas")
    replicas.set_ylim(0, plan.max_replicas + 0.5)
    replicas.set_title(f"ModelService replicas and latency over a step load ({plan.model} model, 1 s windows)")
    latency.set_ylabel("p99 latency, ms (log)")
    plain_log_axis(latency)
    throughput.set_ylabel("requests/second (dotted)")
    throughput.set_ylim(bottom=0)
    latency.set_xlabel("seconds since the step started")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one step of 20 s")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--step", type=float, default=None, help="seconds of load in the step")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    plan = AutoscalingPlan.quick() if args.quick else AutoscalingPlan.full()
    plan.repeats = args.repeats or plan.repeats
    plan.step_seconds = args.step or plan.step_seconds

    from .models import build

    date = stamp()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        models, _ = build([plan.model], work / "models")
        section = measure(plan, models[plan.model], work, f"{date}-")
    path = write_results("autoscaling", section.figures, section.markdown())
    print(section.markdown())
    print(f"\nwritten: {path}, {section.plots[0]}")


if __name__ == "__main__":
    main()
