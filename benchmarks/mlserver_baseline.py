"""MLServer as a baseline: its own venv (made on first use), a custom ``MLModel`` on the same SavedModel
(``benchmarks/mlserver_model.py``), adaptive batching on, 1 or 2 inference workers.

The venv lives in the user's cache (``~/.cache/trainserve-bench/``), so the install (about a minute) happens once.
It gets MLServer from PyPI and reuses our TensorFlow through a ``.pth`` file (the same TensorFlow build as ours,
without a second 600 MB install); its own site-packages come first, so MLServer gets the versions it pins.
Settings follow MLServer's docs: adaptive batching needs ``max_batch_size`` > 1 and ``max_batch_time`` > 0
(https://docs.seldon.ai/mlserver/user-guide/adaptive-batching), ``parallel_workers`` is the server-wide number of
inference processes (https://docs.seldon.ai/mlserver/user-guide/parallel-inference).
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from trainserve_workloads.lifecycle import free_port

from .harness import REPO, progress, stop_process, wait_http

MLSERVER_VERSION = "1.7.1"
#: MLServer 1.7.1's inference workers call ``asyncio.get_event_loop()`` before any loop exists, which uvloop 0.22
#: and later refuse ("There is no current event loop"): the workers die at start.
PINS = (f"mlserver=={MLSERVER_VERSION}", "uvloop==0.21.0")
MAX_BATCH_SIZE = 32  # as our ModelService in the benchmark
MAX_BATCH_TIME_S = 0.001  # the smallest wait that still batches (0 turns batching off)
WORKERS = (1, 2)


class MLServerUnavailable(RuntimeError):
    """MLServer could not be installed or started; the benchmark goes on without it."""


def server_name(workers: int) -> str:
    return f"MLServer, {workers} worker{'s' if workers > 1 else ''}"


def venv_folder() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (
        cache / "trainserve-bench" / f"mlserver-{MLSERVER_VERSION}-py{sys.version_info.major}{sys.version_info.minor}"
    )


def _run(command: list[str], what: str, timeout: float = 900) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise MLServerUnavailable(f"{what} failed ({done.returncode}): {' | '.join(tail)}")


def ensure_venv(folder: Path | None = None) -> Path:
    """The venv's python, installing MLServer first if needed; ``MLServerUnavailable`` says why it cannot."""
    folder = folder or venv_folder()
    python, ready = folder / "bin" / "python", folder / ".ready"
    if ready.exists() and ready.read_text().split() == list(PINS):
        return python
    progress(f"installing mlserver=={MLSERVER_VERSION} into {folder} (once)")
    try:
        _run([sys.executable, "-m", "venv", "--clear", str(folder)], "python -m venv")
        _run([str(python), "-m", "pip", "install", "-q", *PINS], f"pip install {' '.join(PINS)}")
        packages = subprocess.check_output([str(python), "-c", "import site; print(site.getsitepackages()[0])"])
        ours = "\n".join(site.getsitepackages())
        (Path(packages.decode().strip()) / "zz-trainserve-tensorflow.pth").write_text(ours + "\n")
        _run([str(python), "-c", "import mlserver, tensorflow"], "importing mlserver and tensorflow in its venv")
    except (OSError, subprocess.SubprocessError) as err:
        raise MLServerUnavailable(f"could not make MLServer's venv: {err}") from err
    ready.write_text("\n".join(PINS) + "\n")
    return python


def v2_body(features: int) -> str:
    """The benchmark's one row as an Open Inference Protocol (V2) request: MLServer speaks no V1."""
    row = np.random.default_rng(1).random(features).round(4).tolist()
    return json.dumps({"inputs": [{"name": "features", "shape": [1, features], "datatype": "FP32", "data": row}]})


def settings(model_dir: str, name: str, workers: int, port: int) -> dict[str, dict[str, Any]]:
    """``settings.json`` and ``model-settings.json`` of one MLServer run."""
    server = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": workers,
        "debug": False,
    }
    model = {
        "name": name,
        "implementation": "mlserver_model.SavedModelRuntime",
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": MAX_BATCH_TIME_S,
        "parameters": {"uri": model_dir},
    }
    return {"settings.json": server, "model-settings.json": model}


class MLServer:
    """``mlserver start FOLDER`` on a free port, until ``stop``."""

    def __init__(self, python: Path, model_dir: str, name: str, workers: int, work: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder = work / f"mlserver-{name}-{workers}-{self.port}"
        folder.mkdir(parents=True)
        for file, content in settings(model_dir, name, workers, self.port).items():
            (folder / file).write_text(json.dumps(content))
        (folder / "mlserver_model.py").write_text((REPO / "benchmarks" / "mlserver_model.py").read_text())
        self.log = folder / "mlserver.log"
        env = {**os.environ, "PYTHONPATH": str(folder), "TF_CPP_MIN_LOG_LEVEL": "3"}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [str(python.with_name("mlserver")), "start", str(folder)], cwd=folder, env=env, stdout=log, stderr=log
            )
        try:
            wait_http(f"{self.url}/v2/models/{name}/ready", self.process, timeout=180)
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise MLServerUnavailable(f"MLServer did not start: {err}; log: {self.log.read_text()[-800:]}") from err

    def stop(self) -> None:
        stop_process(self.process, timeout=30)
