"""Shared parts of the benchmark harness: repeated measurement, machine facts, JSON/Markdown/PNG output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: cores, memory, versions."""
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    versions = {}
    for package in ("ray", "tensorflow", "tf-keras", "numpy", "trainserve"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "cores": os.cpu_count(),
        "memoryGiB": round(memory_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": versions,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }


def summarize(samples: list[float]) -> dict[str, float]:
    """Median with min and max, the way every figure is reported."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "runs": len(samples)}


def repeat(times: int, measure: Callable[[], float]) -> dict[str, float]:
    return summarize([measure() for _ in range(times)])


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], table: str) -> Path:
    """Write ``results/<date>-<name>.json`` and ``.md``; returns the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    document = {"benchmark": name, "date": datetime.now(UTC).isoformat(), "machine": machine()} | payload
    path = RESULTS / f"{stamp}-{name}.json"
    path.write_text(json.dumps(document, indent=2))
    (RESULTS / f"{stamp}-{name}.md").write_text(table + "\n")
    return path
