"""Serves one ModelService exactly as `trainserve local serve` does, and takes commands on stdin.

`trainserve local serve -f FILE` validates the ModelService, resolves its model and calls
``trainserve_workloads.local_serve.start`` (a local Ray, the throughput-optimized ingress, the Serve config the
operator would put into a RayService), then sleeps until Ctrl-C. This does the same calls, and between them
listens for commands, one per line, each answered with one line (``ok ...`` or ``error ...``):

- ``update MANIFEST``: apply a changed ModelService in place (``LocalService.update``: the running replicas stay,
  scaling and batching change, as when a user edits the ModelService in a cluster);
- ``sample FILE [INTERVAL_S]``: from now on, append Serve's replica counts of the model deployment, by state, to
  FILE as JSON lines (``{"t": epoch seconds, "states": {"RUNNING": 1, ...}}``) every INTERVAL_S (0.5);
- ``stop`` (or the end of stdin, SIGINT, SIGTERM): shut Serve and Ray down and exit.

    python -m benchmarks.serve_driver MANIFEST PORT GRPC_PORT
"""

from __future__ import annotations

import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO


def _lines(stream: TextIO, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line.strip())
    out.put("stop")


def main() -> None:
    manifest, port, grpc_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

    from ray import serve

    from trainserve.api.modelservice import ModelService
    from trainserve.localstate import state_dir
    from trainserve.serveconfig import MODEL_DEPLOYMENT
    from trainserve_workloads.local_serve import local_args, start

    def load(path: Path) -> Any:
        args = local_args(ModelService.model_validate(json.loads(path.read_text())), state_dir())
        return args.model_copy(update={"grpc_port": grpc_port})  # a free port, as `local serve --grpc-port`

    running = start(load(manifest), port=port)
    commands: queue.Queue[str] = queue.Queue()
    signal.signal(signal.SIGINT, lambda *_: commands.put("stop"))
    signal.signal(signal.SIGTERM, lambda *_: commands.put("stop"))
    threading.Thread(target=_lines, args=(sys.stdin, commands), daemon=True).start()
    samples: TextIO | None = None
    interval = 0.5

    def reply(text: str) -> None:
        print(text, flush=True)

    def states() -> dict[str, int]:
        app = serve.status().applications.get(running.name)
        deployment = app.deployments.get(MODEL_DEPLOYMENT) if app else None
        replicas = deployment.replica_states if deployment else {}
        return {str(getattr(k, "value", k)): int(v) for k, v in replicas.items()}

    reply(f"ready {running.url}")
    try:
        while True:
            sampled = time.time()
            if samples is not None:
                try:
                    record: dict[str, Any] = {"t": sampled, "states": states()}
                except Exception as err:  # a slow controller must not end the sampling
                    record = {"t": sampled, "error": repr(err)}
                samples.write(json.dumps(record) + "\n")
                samples.flush()
            try:
                command = commands.get(timeout=max(0.01, interval - (time.time() - sampled)))
            except queue.Empty:
                continue
            verb, _, rest = command.partition(" ")
            try:
                if verb == "stop":
                    break
                if verb == "update":
                    running.update(load(Path(rest)))
                    reply("ok updated")
                elif verb == "sample":
                    path, _, every = rest.partition(" ")
                    interval = float(every) if every else interval
                    samples = Path(path).open("a")  # noqa: SIM115 (closed at exit)
                    reply("ok sampling")
                else:
                    reply(f"error unknown command {verb!r}")
            except Exception as err:
                reply(f"error {err!r}".replace("\n", " "))
    finally:
        if samples is not None:
            samples.close()
        running.stop()


if __name__ == "__main__":
    main()
