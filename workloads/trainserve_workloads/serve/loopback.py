"""Replicas of a local run listen on the address the run was given, not on every interface.

Serve binds each replica's inter-deployment gRPC server to ``[::]:0`` with no setting to change it
(ray/serve/_private/replica.py); with ``TRAINSERVE_BIND_HOST`` set (local runs on loopback) that address is
narrowed to the host, where Ray's single-machine mode also puts the node's own address.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

BIND_HOST_ENV = "TRAINSERVE_BIND_HOST"
_BINDER = "add_port_to_grpc_server"


def narrow_replica_servers() -> None:
    """Only where the node's own address is ``host`` (Ray's single-machine mode): elsewhere other processes reach
    the replica at the node's address."""
    host = os.environ.get(BIND_HOST_ENV)
    if not host:
        return
    import ray

    if not ray.is_initialized() or ray.util.get_node_ip_address() != host:
        return
    from ray.serve._private import replica

    wide: Callable[[Any, str], int] = getattr(replica, _BINDER)
    if getattr(wide, "narrowed", False):
        return

    def narrowed(server: Any, address: str) -> int:
        port = address.rsplit(":", 1)[1]
        return wide(server, f"{host}:{port}")

    narrowed.narrowed = True  # type: ignore[attr-defined]
    setattr(replica, _BINDER, narrowed)
