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
