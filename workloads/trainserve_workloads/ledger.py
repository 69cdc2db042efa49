"""The worker group's record of one attempt, kept by a Ray actor the chief reports to (no TensorFlow here: the
driver creates it)."""

from __future__ import annotations


class WorkerGroupLedger:
    """What happened to the worker group within one attempt, across Ray Train's restarts of it
    (``runPolicy.workerRestarts``): how often it started, and the epochs it trained twice. A Ray actor."""

    def __init__(self) -> None:
        self.starts = 0
        self.furthest_epoch = 0
        self.epochs_rerun = 0

    def started(self, epoch: int) -> None:
        self.starts += 1
        self.epochs_rerun += max(0, self.furthest_epoch - epoch)

    def epoch_done(self, epoch: int) -> None:
        self.furthest_epoch = max(self.furthest_epoch, epoch)

    def summary(self) -> dict[str, int]:
        return {"workerRestarts": max(0, self.starts - 1), "epochsRerun": self.epochs_rerun}
