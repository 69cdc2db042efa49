"""Where progress events go. A sink is anything with ``emit(event)`` and ``close()``; runs pick theirs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any, Protocol

from trainserve.api.progress import ProgressEvent


class ProgressSink(Protocol):
    def emit(self, event: ProgressEvent) -> None: ...

    def close(self) -> None: ...


class FanOut:
    """Sends each event to several sinks."""

    def __init__(self, sinks: Iterable[ProgressSink]):
        self.sinks = list(sinks)

    def emit(self, event: ProgressEvent) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class JsonLinesSink:
    """One JSON object per event, prefixed so it can be picked out of mixed logs (the RayJob's logs)."""

    PREFIX = "TRAINSERVE_PROGRESS "

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def emit(self, event: ProgressEvent) -> None:
        self.stream.write(
            self.PREFIX + json.dumps(event.model_dump(mode="json", by_alias=True, exclude_none=True)) + "\n"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class CallbackSink:
    """Calls a function with each event (tests, and integrations that want events in-process)."""

    def __init__(self, callback: Callable[[ProgressEvent], Any]):
        self.callback = callback

    def emit(self, event: ProgressEvent) -> None:
        self.callback(event)

    def close(self) -> None:
        pass


def _metric(metrics: dict[str, float], *names: str) -> str:
    for name in names:
        if name in metrics:
            return f"{metrics[name]:.4f}"
    return "-"


class RichProgressSink:
    """A terminal progress bar: epoch, loss, accuracy, validation accuracy, ETA."""

    def __init__(self, job_name: str, console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.job_name = job_name
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  val_acc {task.fields[val_acc]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None

    def emit(self, event: ProgressEvent) -> None:
        if event.type == "started":
            self.progress.start()
            note = f" (resumed from epoch {event.resumed_from_epoch})" if event.resumed_from_epoch else ""
            self.task = self.progress.add_task(
                f"{self.job_name}{note}",
                total=event.total_epochs,
                completed=event.epoch or 0,
                loss="-",
                acc="-",
                val_acc="-",
                eta="-",
            )
        elif event.type == "epoch" and self.task is not None:
            m = event.metrics
            self.progress.update(
                self.task,
                completed=event.epoch,
                loss=_metric(m, "loss"),
                acc=_metric(m, "accuracy", "sparse_categorical_accuracy", "binary_accuracy"),
                val_acc=_metric(m, "val_accuracy", "val_sparse_categorical_accuracy", "val_binary_accuracy"),
                eta=f"{event.eta_seconds:.0f}s" if event.eta_seconds is not None else "-",
            )
        elif event.type in ("completed", "failed"):
            self.progress.stop()
            if event.type == "completed" and event.model is not None:
                self.console.print(f"[green]✓[/] model version {event.model.version} at {event.model.uri}")
            elif event.type == "failed":
                self.console.print(f"[red]✗[/] {event.reason}: {event.message}")

    def close(self) -> None:
        self.progress.stop()


class KubernetesStatusSink:
    """Writes progress into the TrainingJob's own ``status`` (``progress``, ``lastCheckpoint``, ``model``).

    Runs in the Ray head pod with the job's ServiceAccount, whose Role allows ``get``/``patch`` on
    ``trainingjobs/status`` of this one TrainingJob and nothing else. Standard library only (no Kubernetes
    client in the workload image). Epoch reports are throttled to one patch per ``min_interval`` seconds;
    ``started``, ``completed`` and ``failed`` are sent at once. A failed patch is logged and never stops
    the training: the next report carries the newer state anyway.
    """

    TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    #: Overrides the API server URL (e.g. ``http://127.0.0.1:PORT`` in tests); default: in-cluster.
    API_URL_ENV = "TRAINSERVE_API_URL"
    NAME_ENV = "TRAINSERVE_JOB_NAME"
    NAMESPACE_ENV = "TRAINSERVE_JOB_NAMESPACE"

    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        api_url: str | None = None,
        token: str | None = None,
        min_interval: float = 1.0,
        timeout: float = 10.0,
        clock: Callable[[], float] | None = None,
    ):
        import os
        import time

        from trainserve.api.trainingjob import TrainingJobStatus

        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.api_url = (api_url or os.environ.get(self.API_URL_ENV) or f"https://{host}:{port}").rstrip("/")
        self.url = f"{self.api_url}/apis/trainserve.io/v1alpha1/namespaces/{namespace}/trainingjobs/{name}/status"
        self._token = token
        self.min_interval = min_interval
        self.timeout = timeout
        self.clock = clock or time.monotonic
        self.status = TrainingJobStatus()
        self._last_sent = float("-inf")
        self._pending = False
        self.failures = 0

    @classmethod
    def from_environment(cls) -> KubernetesStatusSink:
        import os

        name, namespace = os.environ.get(cls.NAME_ENV), os.environ.get(cls.NAMESPACE_ENV)
        if not name or not namespace:
            raise RuntimeError(
                f"--progress kubernetes needs {cls.NAME_ENV} and {cls.NAMESPACE_ENV} (the RayJob sets them)"
            )
        return cls(name, namespace)

    def emit(self, event: ProgressEvent) -> None:
        from trainserve.api.progress import apply_progress

        self.status = apply_progress(self.status, event)
        urgent = event.type != "epoch"
        if urgent or self.clock() - self._last_sent >= self.min_interval:
            self._send()
        else:
            self._pending = True

    def close(self) -> None:
        if self._pending:
            self._send()

    def patch_body(self) -> dict[str, Any]:
        """The merge patch: whole objects, with nulls for unset fields so stale values are cleared."""
        status: dict[str, Any] = {}
        for field, value in (
            ("progress", self.status.progress),
            ("lastCheckpoint", self.status.last_checkpoint),
            ("model", self.status.model),
        ):
            if value is not None:
                status[field] = value.model_dump(mode="json", by_alias=True)
        if self.status.mlflow is not None:
            status["mlflow"] = self.status.mlflow.model_dump(mode="json", by_alias=True)
        if self.status.tensorboard is not None:
            status["tensorboard"] = self.status.tensorboard
        return {"status": status}

    def _send(self) -> None:
        import logging
        import ssl
        import urllib.error
        import urllib.request

        self._last_sent = self.clock()
        self._pending = False
        body = self.patch_body()
        if not body["status"]:
            return
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        token = self._token if self._token is not None else self._read_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="PATCH")
        context = None
        if self.url.startswith("https://"):
            import os

            context = ssl.create_default_context(cafile=self.CA if os.path.exists(self.CA) else None)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                response.read()
        except (urllib.error.URLError, OSError) as err:
            self.failures += 1
            logging.getLogger("trainserve.progress").warning("could not report progress to %s: %s", self.url, err)

    def _read_token(self) -> str:
        try:
            with open(self.TOKEN, encoding="utf-8") as handle:  # re-read: projected tokens rotate
                return handle.read().strip()
        except OSError:
            return ""
