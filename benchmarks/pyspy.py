"""Sampling profiles of running Python processes with py-spy (the serving replica, the baseline server)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .harness import fold_categories, fold_profile

#: Where a serving process spends its samples; the first match wins.
SERVING_CATEGORIES: list[tuple[str, list[str]]] = [
    # no Python frame below the thread's entry: native code (uvloop's loop, Ray's core worker), often waiting
    ("native only (event loop, Ray core worker; may be waiting)", ["leaf:Thread.run (", "leaf:Worker.main_loop ("]),
    ("model call (TensorFlow)", ["tensorflow/", "LoadedModel.predict", "signature(", "predict (benchmarks"]),
    ("batching hand-off", ["serve/batching.py"]),
    ("request parsing and JSON", ["serve/protocol.py", "orjson", "json/", "fastapi/", "request.json"]),
    ("HTTP and ASGI (uvicorn, starlette, Serve middleware)", ["uvicorn/", "starlette/", "http_util.py"]),
    ("Ray Serve replica code", ["ray/serve/"]),
    ("Ray core, metrics, other Ray threads", ["ray/"]),
]


def executable() -> str | None:
    """py-spy from the venv (it installs next to the interpreter), else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def find_pids(*needles: str, command: str | None = None) -> list[int]:
    """Processes whose command line (or title: Ray renames its workers) contains every needle, and whose
    executable name (``/proc/PID/comm``) is ``command`` when given; never this process."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles) and (command is None or comm == command):
            found.append(int(proc.name))
    return sorted(found)


#: Where the training thread of a Ray Train worker spends its wall time (recorded with idle samples, only the
#: stacks of the training function); the first match wins ("!X": X is not on the stack).
TRAINING_THREAD = "_worker (trainserve_workloads/train.py"
TRAINING_CATEGORIES: list[tuple[str, list[str]]] = [
    ("setup outside fit: imports, data, model build, export", ["!Model.fit ("]),
    ("validation pass every epoch (Model.evaluate)", ["Model.evaluate ("]),
    ("checkpoint every epoch (callback)", ["_EpochEnd.on_epoch_end (", "_checkpoint ("]),
    ("tracing and graph building", ["trace_function (", "func_graph_from_py_func ("]),
    ("distributed input iterators (new every epoch)", ["_create_iterators_per_worker (", "enumerate_epochs ("]),
    ("train steps (graph execution, all-reduce included)", ["Function.__call__ (", "quick_execute ("]),
]


class Recording:
    """``py-spy record`` of one process for a fixed time, in the background; ``finish()`` folds it."""

    def __init__(self, pid: int, seconds: float, output: Path, rate: int = 250, idle: bool = False):
        tool = executable()
        if tool is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.output, self.rate, self.seconds = output, rate, seconds
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                tool,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",  # do not pause the process per sample: less overhead, same picture
                *(["--idle"] if idle else []),  # waiting threads too: samples then measure wall time
                "-o",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, requests: int | None = None, top: int = 15) -> dict[str, Any]:
        _, err = self.process.communicate(timeout=self.seconds + 60)
        if self.process.returncode != 0 or not self.output.exists():
            raise RuntimeError(f"py-spy failed ({self.process.returncode}): {err.strip()[-500:]}")
        self.lines = self.output.read_text().splitlines()
        folded = fold_profile(self.lines, top=top)
        folded["categories"] = fold_categories(self.lines, SERVING_CATEGORIES)
        folded["rate"] = self.rate
        # kept gzipped (collapsed stacks: `zcat FILE | flamegraph.pl > out.svg`, or open in speedscope)
        packed = self.output.with_name(self.output.name + ".gz")
        packed.write_bytes(gzip.compress("\n".join(self.lines).encode() + b"\n"))
        self.output.unlink()
        folded["file"] = packed.name
        if requests:
            # samples of a busy thread / rate = CPU seconds (py-spy skips idle threads)
            folded["cpuMsPerRequest"] = round(folded["samples"] / self.rate / requests * 1000, 3)
            folded["requests"] = requests
        return folded
