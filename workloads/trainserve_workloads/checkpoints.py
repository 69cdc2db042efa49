"""Checkpoints under ``checkpoint.uri``: one folder per epoch, complete only once its marker is written.

Layout: ``<checkpoint.uri>/epoch-000004/`` holds the Keras weights (TensorFlow checkpoint format, which
includes the optimizer state) and, written last, ``checkpoint.json``. A folder without the marker is the
remains of a run killed mid-upload and is ignored (and removed by the next run).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainserve.api.trainingjob import TrainingJobSpec

from .errors import WorkloadError
from .storage import Location

MARKER = "checkpoint.json"
WEIGHTS_PREFIX = "weights"
_FOLDER = re.compile(r"^epoch-(\d{6,})$")


def folder_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


def fingerprint(spec: TrainingJobSpec) -> str:
    """What must match for a checkpoint to be resumable: the model, the data and the training recipe.

    `epochs` is left out on purpose: raising it continues a finished run instead of starting over.
    """
    relevant = {
        "model": spec.model.to_wire(),
        "dataset": spec.dataset.to_wire(),
        "training": spec.training.to_wire() | {"epochs": None},
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CheckpointRecord:
    location: Location
    epoch: int
    time: str
    fingerprint: str
    metrics: dict[str, float]


def _complete(root: Location) -> tuple[list[CheckpointRecord], list[Location]]:
    complete, partial = [], []
    for name in root.subdirectories():
        match = _FOLDER.match(name)
        if not match:
            continue
        folder = root.child(name)
        marker = folder.child(MARKER)
        if not marker.exists():
            partial.append(folder)
            continue
        data = json.loads(marker.read_text())
        complete.append(
            CheckpointRecord(folder, int(match.group(1)), data["time"], data["fingerprint"], data.get("metrics", {}))
        )
    return sorted(complete, key=lambda r: r.epoch), partial


def list_checkpoints(root: Location) -> list[CheckpointRecord]:
    """Complete checkpoints, oldest first."""
    return _complete(root)[0]


def latest_checkpoint(root: Location, expected_fingerprint: str) -> CheckpointRecord | None:
    """The checkpoint to resume from, or None; refuses checkpoints of a different model/data/recipe."""
    records = list_checkpoints(root)
    if not records:
        return None
    newest = records[-1]
    if newest.fingerprint != expected_fingerprint:
        raise WorkloadError(
            "spec.checkpoint.uri",
            f"{root.uri} holds checkpoints of a different model, dataset or training recipe "
            f"(epoch {newest.epoch}, fingerprint {newest.fingerprint}, this spec {expected_fingerprint})",
            "point `checkpoint.uri` (or `output.uri`) somewhere new, or delete those checkpoints to start over",
        )
    return newest


def remove_partial(root: Location) -> None:
    """Delete checkpoint folders a killed run left without their marker."""
    for folder in _complete(root)[1]:
        folder.delete()


def write_checkpoint(
    root: Location, epoch: int, local_dir: str, fingerprint_: str, metrics: dict[str, float], keep: int
) -> CheckpointRecord:
    """Upload a local checkpoint folder, mark it complete, and keep only the newest ``keep``."""
    folder = root.child(folder_name(epoch))
    folder.delete()
    folder.upload_dir(local_dir)
    now = datetime.now(UTC).isoformat()
    marker: dict[str, Any] = {"epoch": epoch, "time": now, "fingerprint": fingerprint_, "metrics": metrics}
    folder.child(MARKER).write_text(json.dumps(marker, indent=2))
    for old in list_checkpoints(root)[:-keep]:
        old.location.delete()
    return CheckpointRecord(folder, epoch, now, fingerprint_, metrics)
