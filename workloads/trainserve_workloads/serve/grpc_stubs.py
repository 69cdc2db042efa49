"""The OIP gRPC stubs (tritonclient's generated ``inference.GRPCInferenceService``), importable under the module
name their classes carry.

tritonclient generated them from ``grpc_service.proto``, so their classes name ``grpc_service_pb2`` as their
module, which does not exist. Ray pickles a request by that name where Serve hands it between processes (its
proxy, which HAProxy falls back to, forwards it to a replica) and fails. Importing this module registers
tritonclient's module under that name; Serve imports it in every process that serves gRPC, since the servicer
function is named here (``trainserve.serveconfig.GRPC_SERVICER_FUNCTION``), and replicas import it with the app.
"""

from __future__ import annotations

import sys

from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

sys.modules.setdefault(pb.ModelInferRequest.__module__, pb)

add_GRPCInferenceServiceServicer_to_server = service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server

__all__ = ["add_GRPCInferenceServiceServicer_to_server", "pb"]
