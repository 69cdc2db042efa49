"""Replicas of a local run listen on the address the run was given, not on every interface.

Serve binds each replica's inter-deployment gRPC server to ``[::]:0`` (ray/serve/_private/replica.py) and an
ingress replica's direct-ingress gRPC server to ``[::]:PORT`` (ray/serve/_private/grpc_util.py, through
``default_impl.add_grpc_address``), with no setting to change either; with ``TRAINSERVE_BIND_HOST`` set (local runs
on loopback) both addresses are narrowed to the host, where Ray's single-machine mode also puts the node's own
address.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

BIND_HOST_ENV = "TRAINSERVE_BIND_HOST"
_BINDER = "add_port_to_grpc_server"
_INGRESS_BINDER = "add_grpc_address"


def narrow_replica_servers() -> None:
    """Only where the node's own address is ``host`` (Ray's single-machine mode): elsewhere other processes reach
    the replica at the node's address."""
    host = os.environ.get(BIND_HOST_ENV)
    if not host:
        return
    import ray

    if not ray.is_initialized() or ray.util.get_node_ip_address() != host:
        return
    from ray.serve._private import default_impl, replica

    _narrow(replica, _BINDER, host)
    _narrow(default_impl, _INGRESS_BINDER, host)


def _narrow(module: Any, name: str, host: str) -> None:
    """Replace the binding function ``module.name`` by one that binds its port on ``host`` (once)."""
    wide: Callable[[Any, str], Any] = getattr(module, name)
    if getattr(wide, "narrowed", False):
        return

    def narrowed(server: Any, address: str) -> Any:
        port = address.rsplit(":", 1)[1]
        return wide(server, f"{host}:{port}")

    narrowed.narrowed = True  # type: ignore[attr-defined]
    setattr(module, name, narrowed)
