"""Ray Train's TensorFlow set-up without importing TensorFlow in the driver and the Train controller.

``ray.train.tensorflow`` imports TensorFlow as it is imported, so a run using its ``TensorflowTrainer`` paid
TensorFlow's import in the driver and again in the Train controller before any worker started. The set-up it does
is small and is done here the same way (ray/train/tensorflow/config.py, ``_TensorflowBackend.on_start``): each
worker's ``TF_CONFIG`` lists every worker's address, in rank order, and names the worker's own index.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ray
from ray.train.backend import Backend, BackendConfig

from .lifecycle import free_port


class TensorflowCluster(BackendConfig):
    """The backend config a ``DataParallelTrainer`` takes to run MultiWorkerMirroredStrategy workers."""

    @property
    def backend_cls(self) -> type[Backend]:
        return _TensorflowClusterBackend

    @property
    def framework(self) -> Any:
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TENSORFLOW


def _reachable_address() -> str:
    """This worker's node address and a port free now, for TensorFlow's collective server."""
    host = ray.util.get_node_ip_address()
    port = free_port("::" if ":" in host else "")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _set_tf_config(addresses: list[str], index: int) -> None:
    cluster = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    os.environ["TF_CONFIG"] = json.dumps(cluster)


class _TensorflowClusterBackend(Backend):
    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        addresses = worker_group.execute(_reachable_address)
        ray.get(
            [
                worker_group.execute_single_async(index, _set_tf_config, addresses=addresses, index=index)
                for index in range(len(worker_group))
            ]
        )
