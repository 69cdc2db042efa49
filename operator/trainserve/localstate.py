"""The local state folder (default ``./.trainserve``): what `trainserve local` remembers between runs.

Each local TrainingJob is one JSON file holding the resource as applied and its status, in the same shape
as on a cluster, so `trainserve local status` and a local ModelService's `fromTrainingJob` read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .api.trainingjob import TrainingJob

DEFAULT_STATE_DIR = ".trainserve"
STATE_DIR_ENV = "TRAINSERVE_STATE_DIR"


def state_dir(explicit: str | Path | None = None) -> Path:
    """The state folder: the explicit one, else ``$TRAINSERVE_STATE_DIR``, else ``./.trainserve``."""
    return Path(explicit or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR).resolve()


def _job_file(root: Path, name: str) -> Path:
    return root / "trainingjobs" / f"{name}.json"


def save_job(root: Path, job: TrainingJob) -> None:
    """Write a job's record atomically (a reader never sees half a file)."""
    assert job.metadata.name, "a local TrainingJob needs metadata.name"
    path = _job_file(root, job.metadata.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2))
    temporary.replace(path)


def load_job(root: Path, name: str) -> TrainingJob | None:
    path = _job_file(root, name)
    if not path.exists():
        return None
    return TrainingJob.model_validate_json(path.read_text())


def list_jobs(root: Path) -> list[TrainingJob]:
    folder = root / "trainingjobs"
    if not folder.is_dir():
        return []
    return [TrainingJob.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json"))]
