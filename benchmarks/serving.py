"""Serving: a ModelService (through `trainserve local serve`) against the FastAPI baseline and the model in-process.

Two models (the digits mlp; a compute-heavy dense network), concurrency levels from 1 to 64, load from
`wrk` in its own process (POST bodies from a Lua script). One server runs at a time. Figures per run:
requests/second, p50 and p99 latency, non-2xx and socket errors.

    python -m benchmarks.serving [--quick] [--repeats N] [--duration S]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from .harness import RESULTS, markdown_table, summarize, write_results

REPO = Path(__file__).resolve().parents[1]
ROWS = {"digits": 64, "heavy": 1024}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server not ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, body: str, connections: int, duration: float) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 in ms, errors (non-2xx plus socket errors)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
    finally:
        os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return {"rps": rate, "p50": p50, "p99": p99, "errors": errors}


def in_process(model_dir: str, features: int, seconds: float) -> dict[str, float]:
    """The limit: the signature called with one row in a loop, in this process."""
    script = (
        "import os, sys, time, json, numpy as np\nos.environ['TF_CPP_MIN_LOG_LEVEL']='3'\nimport tensorflow as tf\n"
        "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "x = tf.constant(np.random.default_rng(0).random((1, int(sys.argv[2])), dtype=np.float32))\n"
        "for _ in range(20): f(features=x)\n"
        "times = []\nend = time.monotonic() + float(sys.argv[3])\n"
        "while time.monotonic() < end:\n    t = time.perf_counter(); f(features=x)['predictions'].numpy(); times.append(time.perf_counter() - t)\n"
        "t = np.array(times) * 1000\nprint(json.dumps({'rps': len(t) / t.sum() * 1000, 'p50': float(np.percentile(t, 50)), 'p99': float(np.percentile(t, 99)), 'errors': 0}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, model_dir, str(features), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _body(features: int) -> str:
    row = np.random.default_rng(1).random(features).round(4).tolist()
    return json.dumps({"instances": [row]})


def run_server(
    kind: str, model_dir: str, name: str, concurrency: list[int], duration: float, work: Path
) -> dict[int, dict[str, float]]:
    port = _free_port()
    if kind == "baseline":
        command = [sys.executable, "-m", "benchmarks.baseline_server", model_dir, name, str(port)]
    else:
        service = {
            "apiVersion": "trainserve.io/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": name},
            "spec": {
                "model": {"uri": model_dir},
                "replicas": 1,
                "batching": {"maxBatchSize": 32, "batchWaitTimeoutMs": 0},
                "resources": {"cpusPerReplica": 0.5, "memoryPerReplica": "2Gi"},
            },
        }
        manifest = work / f"{name}-modelservice.json"
        manifest.write_text(json.dumps(service))
        command = [sys.executable, "-m", "trainserve.cli", "local", "serve", "-f", str(manifest), "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, process)
        url = f"http://127.0.0.1:{port}/v1/models/{name}:predict"
        body = _body(ROWS[name])
        wrk(url, body, max(concurrency), 3)  # warm-up
        return {c: wrk(url, body, c, duration) for c in concurrency}
    finally:
        _stop(process)


def plot(figures: dict[str, Any], concurrency: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(figures), figsize=(5.5 * len(figures), 8), squeeze=False)
    for column, model in enumerate(sorted(figures)):
        for server, series in figures[model].items():
            if server == "in-process":
                axes[0][column].axhline(
                    series["rps"]["median"], linestyle=":", color="grey", label="in-process (1 row)"
                )
                continue
            rps = [series[str(c)]["rps"]["median"] for c in concurrency]
            p99 = [series[str(c)]["p99"]["median"] for c in concurrency]
            axes[0][column].plot(concurrency, rps, marker="o", label=server)
            axes[1][column].plot(concurrency, p99, marker="o", label=server)
        axes[0][column].set_title(f"{model}: requests/second")
        axes[1][column].set_title(f"{model}: p99 latency (ms)")
        for row in (0, 1):
            axes[row][column].set_xscale("log", base=2)
            axes[row][column].set_xlabel("concurrent connections")
            axes[row][column].legend()
        axes[1][column].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="concurrency 1, 8, 32; 5 s runs; one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", help="override the connection counts")
    parser.add_argument("--models", nargs="+", choices=["digits", "heavy"], default=["digits", "heavy"])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    concurrency = args.concurrency or ([1, 8, 32] if args.quick else [1, 8, 32, 64])
    repeats = args.repeats or (1 if args.quick else 3)
    duration = args.duration or (5.0 if args.quick else 10.0)

    from .models import digits_mlp, heavy

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        makers = {"digits": digits_mlp, "heavy": heavy}
        models = {name: makers[name](work / name) for name in args.models}
        for name, model_dir in models.items():
            runs: dict[str, list[dict[int, dict[str, float]]]] = {"FastAPI baseline": [], "trainserve": []}
            limit = [in_process(model_dir, ROWS[name], 3.0) for _ in range(repeats)]
            for _ in range(repeats):
                runs["FastAPI baseline"].append(run_server("baseline", model_dir, name, concurrency, duration, work))
                runs["trainserve"].append(run_server("trainserve", model_dir, name, concurrency, duration, work))
            figures[name] = {
                server: {
                    str(c): {k: summarize([r[c][k] for r in results]) for k in ("rps", "p50", "p99", "errors")}
                    for c in concurrency
                }
                for server, results in runs.items()
            }
            figures[name]["in-process"] = {k: summarize([r[k] for r in limit]) for k in ("rps", "p50", "p99")}

    rows = []
    for name in args.models:
        base, ours = figures[name]["FastAPI baseline"], figures[name]["trainserve"]
        for c in concurrency:
            b, t = base[str(c)], ours[str(c)]
            rows.append(
                [
                    name,
                    c,
                    f"{b['rps']['median']:.0f} / {b['p50']['median']:.1f} / {b['p99']['median']:.1f}",
                    f"{t['rps']['median']:.0f} / {t['p50']['median']:.1f} / {t['p99']['median']:.1f}",
                    f"{t['rps']['median'] / b['rps']['median']:.2f}x",
                    f"{int(b['errors']['max'])} / {int(t['errors']['max'])}",
                ]
            )
        limit = figures[name]["in-process"]
        rows.append(
            [
                name,
                "in-process",
                f"{limit['rps']['median']:.0f} calls/s, p50 {limit['p50']['median']:.2f} ms",
                "",
                "",
                "",
            ]
        )
    table = markdown_table(
        [
            "model",
            "c",
            "FastAPI req/s / p50 / p99 ms",
            "trainserve req/s / p50 / p99 ms",
            "ratio",
            "errors (base/ours)",
        ],
        rows,
    )

    def ratio(model: str, c: int) -> float:
        if model not in figures or str(c) not in figures[model]["trainserve"]:
            return float("nan")
        ours, base = figures[model]["trainserve"][str(c)], figures[model]["FastAPI baseline"][str(c)]
        return float(ours["rps"]["median"] / base["rps"]["median"])

    heavy32, digits1 = ratio("heavy", 32), ratio("digits", 1)
    targets: dict[str, Any] = {"heavy_c32_ratio": heavy32, "heavy_c32_ratio_target": 5.0}
    targets |= {"digits_c1_ratio": digits1, "digits_c1_ratio_target": 0.85}
    if "heavy" in figures and "32" in figures["heavy"]["trainserve"]:
        ours, base = figures["heavy"]["trainserve"]["32"], figures["heavy"]["FastAPI baseline"]["32"]
        targets["heavy_c32_p99_lower"] = ours["p99"]["median"] < base["p99"]["median"]
    path = write_results(
        "serving",
        {"concurrency": concurrency, "repeats": repeats, "duration": duration, "figures": figures, "targets": targets},
        table,
    )
    png = RESULTS / (path.stem + ".png")
    plot(figures, concurrency, png)
    print(table)
    print(
        f"\nheavy model at c=32: {heavy32:.2f}x the baseline's req/s (target >= 5); digits at c=1: {digits1:.2f}x (target >= 0.85)"
    )
    print(f"written: {path}, {png}")


if __name__ == "__main__":
    main()
