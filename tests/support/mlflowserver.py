"""A real MLflow tracking server for the tests: SQLite backend store, artifacts on local disk served by the server
(so ``mlflow-artifacts:/`` locations work as on a cluster), on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from benchmarks.harness import wait_http
from trainserve_workloads.lifecycle import free_port


@contextlib.contextmanager
def running_mlflow_server(folder: Path) -> Iterator[str]:
    """Runs ``mlflow server`` with its store under ``folder`` until the block ends; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"{url}/health", process, timeout=120)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # the server's own group: gunicorn/uvicorn and its workers
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
