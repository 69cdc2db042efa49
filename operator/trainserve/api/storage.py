"""Storage URIs as the API sees them: which name a claim (``pvc://CLAIM/PATH``), which are local paths.

``pvc://CLAIM/PATH`` follows KServe's convention: on a cluster the operator mounts ``CLAIM`` into the Ray pods at
``CLUSTER_VOLUMES_DIR/CLAIM``; locally ``trainserve local`` finds it under ``./.trainserve/volumes/CLAIM``. Pure
standard library, shared by the operator and the workloads.
"""

from __future__ import annotations

from urllib.parse import urlparse

#: Where the workloads look for claims; the operator sets it in every Ray pod.
VOLUMES_DIR_ENV = "TRAINSERVE_VOLUMES_DIR"
DEFAULT_VOLUMES_DIR = "./.trainserve/volumes"
CLUSTER_VOLUMES_DIR = "/mnt/trainserve/volumes"
#: Schemes every pod of a cluster can reach (a plain path would be the pod's own disk); ``models:/`` and
#: ``mlflow-artifacts:/`` through an MLflow tracking server.
CLUSTER_SCHEMES = frozenset({"pvc", "s3", "gs", "https", "models", "mlflow-artifacts"})


def claim_of(uri: str | None) -> str | None:
    """``pvc://models/digits`` -> ``models``; None for any other URI."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme != "pvc":
        return None
    return parsed.netloc or None


def is_local_path(uri: str | None) -> bool:
    """Whether ``uri`` is a path on the machine that reads it (``./x``, ``/data``, ``file://``)."""
    return bool(uri) and urlparse(uri).scheme not in CLUSTER_SCHEMES


def mounted_path(uri: str) -> str:
    """Where a ``pvc://`` URI is inside a Ray pod of the cluster."""
    parsed = urlparse(uri)
    return f"{CLUSTER_VOLUMES_DIR}/{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")


def tensorboard_logdir(output_uri: str) -> str:
    """A TrainingJob's TensorBoard logdir: one folder per attempt inside it, next to the model versions."""
    return f"{output_uri.rstrip('/')}/tensorboard"
