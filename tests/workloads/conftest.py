"""Fixtures for the workload tests: a local S3 server, and running `trainserve local` as a user does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainserve_workloads.lifecycle import free_port
from trainserve_workloads.local_serve import PER_SERVICE_ENV

REPO = Path(__file__).resolve().parents[2]
S3_KEYS = {"AWS_ACCESS_KEY_ID": "test-access", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `trainserve` subprocess: the test tree importable (user model modules)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("RAY_ADDRESS", None)
    for key in PER_SERVICE_ENV:
        env.pop(key, None)  # a local service started in this process pinned its ports here: the child picks its own
    env.pop("TRAINSERVE_VOLUMES_DIR", None)  # the local default, under the command's own directory
    env.update(extra or {})
    return env


def trainserve(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainserve.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd=cwd,
        timeout=timeout,
    )


def start_trainserve(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """`trainserve ARGS` running in the background (stdout and stderr together), for a test to signal or watch."""
    return subprocess.Popen(
        [sys.executable, "-m", "trainserve.cli", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def write_job(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A real S3 API (moto in server mode) on loopback, with a bucket `ml-data`; yields the client environment."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = S3_KEYS | {"AWS_ENDPOINT_URL": endpoint}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
            region="us-east-1",
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        fs.create_dir("ml-data")
        yield env
    finally:
        process.terminate()
        process.wait(timeout=10)
