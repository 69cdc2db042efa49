"""`make demo`: train the digits example, serve it, and query it through both protocols, on this machine.

python examples/demo.py [--port 8000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from sklearn.datasets import load_digits

from trainserve.api.modelservice import ModelService
from trainserve.localstate import state_dir
from trainserve_workloads.local_serve import local_args, start, urls

EXAMPLES = Path(__file__).resolve().parent


def held_out_digits(seed: int = 42, split: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The validation rows of the TrainingJob (same shuffle seed and split): never seen in training."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = round(len(x) * split)
    return x[order][:n_val].astype("float32"), y[order][:n_val]


def post(connection: http.client.HTTPConnection, path: str, payload: dict[str, object]) -> dict[str, object]:
    connection.request("POST", path, json.dumps(payload), {"content-type": "application/json"})
    response = connection.getresponse()
    body = json.loads(response.read())
    if response.status != 200:
        raise SystemExit(f"{path} answered {response.status}: {body}")
    return body  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    print("== 1. train examples/digits-trainingjob.yaml on a local Ray (2 workers) ==", flush=True)
    train = [
        sys.executable,
        "-m",
        "trainserve.cli",
        "local",
        "train",
        "-f",
        str(EXAMPLES / "digits-trainingjob.yaml"),
        "--restart",
    ]
    if subprocess.run(train).returncode != 0:
        return 1

    print("\n== 2. serve examples/digits-modelservice.yaml (fromTrainingJob: digits) ==", flush=True)
    service = ModelService.model_validate(yaml.safe_load((EXAMPLES / "digits-modelservice.yaml").read_text()))
    started = time.monotonic()
    running = start(local_args(service, state_dir()), port=args.port)
    print(f"ready in {time.monotonic() - started:.0f}s")
    for label, url in urls(running).items():
        print(f"  {label:<10} {url}")
    try:
        x, y = held_out_digits()
        connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        name = running.name
        print(f"\n== 3. {len(x)} held-out digits through both protocols ==")
        v1 = np.concatenate(
            [
                np.asarray(
                    post(connection, f"/v1/models/{name}:predict", {"instances": x[i : i + 32].tolist()})["predictions"]
                )
                for i in range(0, len(x), 32)
            ]
        )
        v2_outputs = []
        for i in range(0, len(x), 32):
            rows = x[i : i + 32]
            tensor = {"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
            answer = post(connection, f"/v2/models/{name}/infer", {"id": f"batch-{i}", "inputs": [tensor]})
            output = answer["outputs"][0]  # type: ignore[index]
            v2_outputs.append(np.reshape(output["data"], output["shape"]))
        v2 = np.concatenate(v2_outputs)
        print(f"KServe v1 accuracy: {(v1.argmax(axis=1) == y).mean():.3f}")
        print(
            f"OIP v2    accuracy: {(v2.argmax(axis=1) == y).mean():.3f}  (same answers as v1: {np.allclose(v1, v2, atol=1e-6)})"
        )
        first = v1[0]
        print(f"sample: a handwritten {y[0]} -> predicted {first.argmax()} with probability {first.max():.3f}")
        print(
            "\n"
            + "\n".join(" ".join("#" if p > 8 else ("+" if p > 3 else ".") for p in row) for row in x[0].reshape(8, 8))
        )
    finally:
        print("\n== 4. shut down ==")
        running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
