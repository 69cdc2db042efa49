"""Shared parts of the benchmark harness: statistics, machine facts, load from `wrk`, results on disk.

Everything here that computes (percentiles, summaries, tables, wrk output parsing, profile folding) is pure
and has unit tests in ``tests/unit/test_benchmarks.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


# --- statistics ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median with min and max, the way every figure is reported."""
    clean = [s for s in samples if s is not None and not (isinstance(s, float) and math.isnan(s))]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "runs": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean), "runs": len(clean)}


def repeat(times: int, measure: Callable[[], float]) -> dict[str, float]:
    return summarize([measure() for _ in range(times)])


def fmt(summary: dict[str, float], digits: int = 0, unit: str = "") -> str:
    """``median (min-max)``; only the median when there was one run."""
    if summary.get("runs", 0) == 0 or math.isnan(summary["median"]):
        return "n/a"
    median = f"{summary['median']:.{digits}f}{unit}"
    if summary.get("runs", 1) <= 1:
        return median
    return f"{median} ({summary['min']:.{digits}f}-{summary['max']:.{digits}f})"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- machine facts ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: cores, memory, CPU, load, versions, commit."""
    memory_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    versions = {}
    for package in ("ray", "tensorflow", "tf-keras", "numpy", "kopf", "kmock", "kubernetes", "trainserve"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        versions["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO)
    return {
        "cores": os.cpu_count(),
        "memoryGiB": round(memory_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "commit": commit.stdout.strip(),
        "dirty": bool(dirty.stdout.strip()),
    }


# --- processes and ports ------------------------------------------------------------------------------------


def wait_http(url: str, process: subprocess.Popen[Any] | None = None, timeout: float = 240) -> None:
    """Until ``url`` answers 200 (or the process exits, or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 60) -> None:
    """Ask politely (SIGINT: Ctrl-C, so a local Ray is shut down), then kill."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def process_memory_peak_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), seconds; NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_snapshot(root: str = "/proc") -> dict[int, tuple[str, float]]:
    """{pid: (command, CPU seconds)} of every process (or, with ``root="/proc/PID/task"``, of every thread)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path(root).iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        name = comm if root != "/proc" or not cmdline else f"{comm}: {' '.join(cmdline.split())[:70]}"
        out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return out


def cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], per: float, top: int = 8
) -> list[dict[str, Any]]:
    """The biggest CPU users between two snapshots, in milliseconds per ``per`` (e.g. per request)."""
    used = [
        {"name": name, "pid": pid, "ms": round((cpu - before.get(pid, (name, 0.0))[1]) * 1000 / per, 3)}
        for pid, (name, cpu) in after.items()
    ]
    used = [u for u in used if u["ms"] > 0]
    return sorted(used, key=lambda u: -u["ms"])[:top]


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- wrk ----------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_ms(text: str) -> float:
    """A wrk duration (``812.00us``, ``1.20ms``, ``2.01s``) in milliseconds."""
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """requests/s, p50/p99 in ms, requests, errors (non-2xx plus socket errors) from ``wrk --latency``."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{out}")
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return {
        "rps": float(rate.group(1)),
        # wrk prints no percentiles when nothing completed
        "p50": wrk_ms(p50.group(1)) if p50 else math.nan,
        "p99": wrk_ms(p99.group(1)) if p99 else math.nan,
        "requests": int(total.group(1)) if total else 0,
        "errors": errors,
    }


class Wrk:
    """POSTs one JSON body with `wrk` (its own process, a Lua script for the body)."""

    def __init__(self, url: str, body: str):
        self.url = url
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(
                f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
        self.script = script.name

    def run(self, connections: int, duration: float, timeout_s: float = 10) -> dict[str, float]:
        """One run of ``duration`` seconds (wrk takes whole seconds) with ``connections`` connections."""
        seconds = max(1, round(duration))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                f"--timeout={timeout_s:g}s",
                "--latency",
                "-s",
                self.script,
                self.url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + timeout_s + 30,
        ).stdout
        return parse_wrk(out)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.script)

    def __enter__(self) -> Wrk:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- profiles -----------------------------------------------------------------------------------------------


def fold_profile(collapsed: Iterable[str], top: int = 15) -> dict[str, Any]:
    """Top functions of a py-spy ``--format raw`` profile (collapsed stacks: ``frame;frame;... count``).

    ``self`` counts samples where the function is the innermost frame, ``total`` samples where it is anywhere
    on the stack (once per stack); both as shares of all samples. Functions are ``name (file)`` without lines.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in collapsed:
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [_function(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for function in set(frames):
            inclusive[function] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / samples, 4), "samples": count}
            for name, count in counter.most_common(top)
        ]

    return {"samples": samples, "self": share(own) if samples else [], "total": share(inclusive) if samples else []}


def fold_categories(collapsed: Iterable[str], rules: Sequence[tuple[str, Sequence[str]]]) -> dict[str, float]:
    """Shares of samples by category: a stack belongs to the first rule with a substring in any of its frames
    (``leaf:...``: in its innermost frame; ``!...``: in none), else to ``other``. Rules are checked in order."""

    def matches(needle: str, stack: str) -> bool:
        if needle.startswith("!"):
            return needle[1:] not in stack
        if needle.startswith("leaf:"):
            return needle[5:] in stack.rsplit(";", 1)[-1]
        return needle in stack

    totals: Counter[str] = Counter()
    for line in collapsed:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        label = next((name for name, needles in rules if any(matches(n, stack) for n in needles)), "other")
        totals[label] += int(count_text)
    samples = sum(totals.values())
    return {label: round(count / samples, 4) for label, count in totals.most_common()} if samples else {}


def _function(frame: str) -> str:
    """``handle (ray/serve/_private/replica.py:123)`` -> ``handle (ray/serve/_private/replica.py)``."""
    frame = frame.strip()
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "python/" + path.split("/", 1)[-1]
            break
    return f"{name} ({path})"


# --- sections and results -----------------------------------------------------------------------------------


@dataclass
class Section:
    """One benchmark's share of a result set: figures for the JSON, a Markdown table, notes, plots."""

    name: str
    title: str
    figures: dict[str, Any]
    table: str
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", self.table]
        if self.notes:
            parts += ["", *[f"- {note}" for note in self.notes]]
        if self.plots:
            parts += ["", *[f"![{plot.stem}]({plot.name})" for plot in self.plots]]
        return "\n".join(parts)


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def write_results(name: str, payload: dict[str, Any], table: str) -> Path:
    """One benchmark run on its own: ``results/<date>-<name>.json`` and ``.md``; returns the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "date": datetime.now(UTC).isoformat(), "machine": machine()} | payload
    path = RESULTS / f"{stamp()}-{name}.json"
    path.write_text(json.dumps(document, indent=2, default=_json_default))
    (RESULTS / f"{stamp()}-{name}.md").write_text(table + "\n")
    return path


def write_combined(sections: list[Section], settings: dict[str, Any], wall_seconds: float, name: str) -> Path:
    """The unified run: ``results/<name>.json`` (every figure) and ``results/<name>.md`` (every table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "date": datetime.now(UTC).isoformat(),
        "settings": settings,
        "wallSeconds": round(wall_seconds, 1),
        "machine": machine(),
        "sections": {
            s.name: {
                "title": s.title,
                "seconds": round(s.seconds, 1),
                "figures": s.figures,
                "notes": s.notes,
                "plots": [p.name for p in s.plots],
                "table": s.table,
            }
            for s in sections
        },
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, default=_json_default))
    facts = document["machine"]
    header = (
        f"# Benchmarks {name} ({settings.get('mode', '')})\n\n"
        f"{facts['cores']} cores ({facts['cpu']}), {facts['memoryGiB']} GiB, Python {facts['python']}, "
        f"Ray {facts['versions'].get('ray')}, TensorFlow {facts['versions'].get('tensorflow')}, "
        f"commit {facts['commit']}{' (with local changes)' if facts['dirty'] else ''}; "
        f"wall time {wall_seconds:.0f} s.\n"
    )
    (RESULTS / f"{name}.md").write_text(header + "\n" + "\n\n".join(s.markdown() for s in sections) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_log_axis(axis: Any, which: str = "y") -> None:
    """Log scale with ticks written as plain numbers (``200``, not ``2 x 10^2``)."""
    from matplotlib import ticker

    getattr(axis, f"set_{which}scale")("log")
    target = axis.yaxis if which == "y" else axis.xaxis
    target.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}" if str(value)[0] in "25" else ""))


def progress(message: str) -> None:
    """A line on stderr, so that a long run shows where it is (stdout carries the tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
