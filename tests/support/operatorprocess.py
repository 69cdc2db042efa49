"""The operator as its own process (`trainserve run`), logged in through a kubeconfig as in a pod."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.kubesim import NAMESPACE

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """`trainserve run -A --standalone` in its own process, logged in through a kubeconfig, as in a pod."""

    def __init__(self, kubeconfig: Path, metrics_port: int, log: Path):
        self.kubeconfig, self.metrics_port, self.log = kubeconfig, metrics_port, log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "TRAINSERVE_RESYNC_SECONDS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        command = [sys.executable, "-m", "trainserve.cli", "run", "-A", "--standalone"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--metrics-port", str(self.metrics_port)], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last writes."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    async def stop_serving(self) -> None:
        """:meth:`stop` from a test whose event loop also runs the emulated API server: the loop keeps answering
        the operator's last calls while it shuts down (blocked, it would make the operator wait until SIGKILL)."""
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": server.rstrip("/")}}],
        "users": [{"name": "operator", "user": {"token": "chaos"}}],
        "contexts": [{"name": "chaos", "context": {"cluster": "emulated", "user": "operator", "namespace": NAMESPACE}}],
        "current-context": "chaos",
    }
    path.write_text(yaml.safe_dump(config))
    return path
