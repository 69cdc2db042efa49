"""The model layout that training writes and serving reads: ``<output.uri>/<version>/`` + ``model.json``.

A version folder counts only once its model card ``model.json`` exists: the card is written last, so a
reader never sees a half-uploaded model, and a failed upload is removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .storage import Location, locate

CARD = "model.json"


def versions(output: Location) -> list[int]:
    """Complete model versions under an output location, ascending."""
    found = [int(n) for n in output.subdirectories() if n.isdigit()]
    return sorted(v for v in found if output.child(str(v), CARD).exists())


def next_version(output: Location) -> int:
    """One more than any numbered folder present (complete or not), so a number is never reused."""
    numbered = [int(n) for n in output.subdirectories() if n.isdigit()]
    return max(numbered, default=0) + 1


def publish(output: Location, local_model_dir: str | Path, card: dict[str, Any]) -> tuple[int, Location]:
    """Upload a SavedModel folder as the next version, card last; nothing stays behind on failure."""
    version = next_version(output)
    target = output.child(str(version))
    try:
        target.upload_dir(local_model_dir)
        card = card | {"version": version, "uri": target.uri}
        target.child(CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    except BaseException:
        target.delete()
        raise
    return version, target


#: Model locations only an MLflow tracking server can read (a registered version's ``source``).
MLFLOW_SCHEMES = ("mlflow-artifacts:", "runs:")


def resolve(uri: str) -> tuple[Location, dict[str, Any]]:
    """A model version folder and its card, from a version URI or an output URI (its newest version)."""
    location = locate(_downloaded(uri) if uri.startswith(MLFLOW_SCHEMES) else uri)
    card = location.child(CARD)
    if card.exists():
        return location, json.loads(card.read_text())
    available = versions(location)
    if not available:
        raise FileNotFoundError(f"no model at {uri}: expected {CARD} there, or version folders <n>/{CARD} under it")
    newest = location.child(str(available[-1]))
    return newest, json.loads(newest.child(CARD).read_text())


def _downloaded(uri: str) -> str:
    """A local copy of model files kept by an MLflow tracking server (``$MLFLOW_TRACKING_URI``, with MLflow's
    credential variables), fetched once per URI: a registered version never changes its files."""
    import hashlib
    import tempfile

    folder = Path(tempfile.gettempdir()) / "trainserve-mlflow" / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if (folder / "model" / CARD).exists():
        return str(folder / "model")
    import mlflow.artifacts

    folder.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="download-", dir=folder.parent))
    try:
        fetched = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(partial)))
        if not (fetched / CARD).exists():
            raise FileNotFoundError(f"{uri} holds no {CARD}: register a model a TrainingJob logged to MLflow")
        fetched.rename(folder / "model")  # complete or absent: another replica may be downloading too
    except OSError:
        if not (folder / "model" / CARD).exists():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return str(folder / "model")
