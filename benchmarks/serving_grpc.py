"""gRPC next to REST on one service: requests/s, p50 and p99 of the same model, replica and batching.

One ModelService per model (one replica at 0.5 CPU, batch 32 without waiting, as the serving benchmark), served
as `trainserve local serve` serves it, with the Open Inference Protocol on both its HTTP port and its gRPC port.
At each concurrency the two protocols take turns, so both meet the same machine:

- REST: `wrk` POSTing the OIP v2 JSON body of one row to ``/v2/models/NAME/infer``;
- gRPC: `h2load` (nghttp2, `apt-get install nghttp2-client`) sending the framed ``ModelInferRequest`` of the
  same row (``raw_input_contents``, as `tritonclient.grpc` sends it) to ``inference.GRPCInferenceService/ModelInfer``,
  one stream per connection. h2load does not read gRPC's status (it is in the trailers), so one call through the
  gRPC stubs checks the request first.

Both load generators are native programs in their own processes, on the same cores as the server.

    python -m benchmarks.serving_grpc [--quick] [--models digits heavy] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .harness import Wrk, markdown_table, percentile, progress, summarize, write_results
from .models import FEATURES as ROWS
from .models import MAKERS

GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def row(features: int) -> np.ndarray:
    return np.random.default_rng(1).random((1, features), dtype=np.float32).round(4)


def rest_body(features: int) -> str:
    tensor = {"name": "features", "shape": [1, features], "datatype": "FP32", "data": row(features).ravel().tolist()}
    return json.dumps({"inputs": [tensor]})


def grpc_request(name: str, features: int) -> Any:
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name="features", datatype="FP32", shape=[1, features])
    request.raw_input_contents.append(row(features).astype("<f4").tobytes())
    return request


def check_grpc(address: str, request: Any) -> None:
    """One call through the stubs: h2load counts an HTTP 200 with a gRPC error in its trailers as a success."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert answer.raw_output_contents, answer


class H2loadGrpc:
    """Unary gRPC calls of one framed request with `h2load` (its own process), one stream per connection."""

    def __init__(self, address: str, request: Any):
        payload = request.SerializeToString()
        self.url = f"http://{address}{GRPC_PATH}"
        with tempfile.NamedTemporaryFile("wb", suffix=".grpc", delete=False) as framed:
            framed.write(b"\0" + len(payload).to_bytes(4, "big") + payload)  # gRPC's length-prefixed message
        self.body = framed.name

    def run(self, connections: int, duration: float) -> dict[str, float]:
        seconds = max(1, round(duration))
        with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
            command = ["h2load", f"-c{connections}", "-m1", "-t1", f"-D{seconds}", "-d", self.body]
            command += ["-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", log.name, self.url]
            out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
            elapsed_ms = [int(line.split()[2]) / 1000.0 for line in Path(log.name).read_text().splitlines() if line]
        return parse_h2load(out, elapsed_ms)


def parse_h2load(out: str, elapsed_ms: list[float]) -> dict[str, float]:
    rate = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    counts = re.search(r"(\d+) done, \d+ succeeded, (\d+) failed, \d+ errored, (\d+) timeout", out)
    if rate is None or counts is None:
        raise RuntimeError(f"unexpected h2load output:\n{out[-2000:]}")
    return {
        "rps": float(rate[1]),
        "p50": percentile(elapsed_ms, 50),
        "p99": percentile(elapsed_ms, 99),
        "requests": float(counts[1]),
        "errors": float(int(counts[2]) + int(counts[3])),
    }


def measure_model(name: str, model_dir: str, concurrency: list[int], repeats: int, duration: float, work: Path) -> Any:
    """{protocol: {c: summary}} for one model, the protocols taking turns at each level."""
    from .serving import LocalServer, modelservice

    server = LocalServer(modelservice(name, model_dir), work)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {"REST": {}, "gRPC": {}}
    try:
        server.wait_ready()
        request = grpc_request(name, ROWS[name])
        check_grpc(server.grpc_address, request)
        rest, grpc_load = (
            Wrk(f"{server.url}/v2/models/{name}/infer", rest_body(ROWS[name])),
            H2loadGrpc(server.grpc_address, request),
        )
        rest.run(max(concurrency), 1)
        grpc_load.run(max(concurrency), 1)
        for connections in concurrency:
            progress(f"{name} at c={connections}: REST and gRPC, {repeats} turn(s) each")
            for _ in range(repeats):
                runs["REST"].setdefault(connections, []).append(rest.run(connections, duration))
                runs["gRPC"].setdefault(connections, []).append(grpc_load.run(connections, duration))
        rest.close()
    finally:
        server.stop()
    keys = ("rps", "p50", "p99", "errors")
    return {
        protocol: {str(c): {k: summarize([r[k] for r in results]) for k in keys} for c, results in levels.items()}
        for protocol, levels in runs.items()
    }


def table(figures: dict[str, Any]) -> str:
    rows = []
    for name, protocols in figures.items():
        for level in protocols["REST"]:
            rest, grpc = protocols["REST"][level], protocols["gRPC"][level]
            ratio = grpc["rps"]["median"] / max(rest["rps"]["median"], 1e-9)
            rows.append([name, level, _cell(rest), _cell(grpc), f"{ratio:.2f}x"])
    headers = ["model", "connections", "REST v2 JSON: req/s / p50 / p99 ms", "gRPC: req/s / p50 / p99 ms", "gRPC/REST"]
    return markdown_table(headers, rows)


def _cell(summary: dict[str, Any]) -> str:
    rps = summary["rps"]
    errors = int(summary["errors"]["max"])
    spread = f" ({rps['min']:.0f}-{rps['max']:.0f})" if rps["min"] != rps["max"] else ""
    return f"{rps['median']:.0f}{spread} / {summary['p50']['median']:.1f} / {summary['p99']['median']:.1f}" + (
        f", {errors} errors" if errors else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s runs, one turn per protocol and level")
    parser.add_argument("--models", nargs="+", choices=list(MAKERS), default=list(MAKERS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    repeats, duration = (1, 3.0) if args.quick else (3, 8.0)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="trainserve-bench-grpc-") as folder:
        work = Path(folder)
        for name in args.models:
            progress(f"building the {name} model")
            model_dir = MAKERS[name](work / "models" / name)
            figures[name] = measure_model(name, model_dir, args.concurrency, repeats, duration, work)
    text = table(figures)
    plan = {"repeats": repeats, "duration": duration, "concurrency": args.concurrency}
    print(text)
    print(write_results("serving-grpc", {"plan": plan, "figures": figures}, text))


if __name__ == "__main__":
    main()
