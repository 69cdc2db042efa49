"""The Ray Serve application: one ingress deployment that answers KServe v1 and OIP v2 itself.

Why one deployment: on the throughput-optimized path (direct ingress behind HAProxy) every hop between
deployments costs a round trip, so the replica that receives a request also parses it, batches it and
runs the model. A canary is a second model loaded in the same replicas; it answers its share of the requests, or in
shadow mode scores requests the primary answered (:mod:`.shadow`). The split, the mode, the model versions and
batching change through ``reconfigure`` (Serve ``user_config``) without restarting replicas.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from trainserve.api.serving import DEFAULT_MAX_BODY_BYTES, ServeAppArgs
from trainserve.serveconfig import MODEL_DEPLOYMENT, REPLICA_LOGGING, STATS_DEPLOYMENT, deployment_options

from ..tf_threads import size_thread_pools
from . import grpc_protocol
from .batching import DynamicBatcher
from .edge import authorize, binary_tensor_response, check_bearer, error_response, json_response, read_body
from .grpc_stubs import pb
from .model import LoadedModel, load_model
from .protocol import (
    HEADER_LENGTH_HEADER,
    ProtocolError,
    parse_v1,
    parse_v2,
    v2_binary_response,
    v2_metadata,
    v2_response,
)
from .routes import LIVE, READY, V1_MODEL, V1_PREDICT, V2_INFER, V2_METADATA, V2_MODEL_READY, V2_STATS, Auth, resolve
from .shadow import ShadowScorer
from .stats import StatsCollector
from .telemetry import Telemetry, roles

log = logging.getLogger("trainserve.serve")

GrpcMethod = Callable[[Any, Any, RayServegRPCContext], Awaitable[Any]]


def grpc_answer(empty: Callable[[], Any]) -> Callable[[GrpcMethod], GrpcMethod]:
    """A refusal answers with its gRPC status and REST's message and an ``empty`` message, without raising: Serve
    logs every exception raised in a replica at ERROR with its traceback (replica.py, ``_handle_errors_and_metrics``),
    which a client's mistake is not. A bug of ours is INTERNAL without its details, and raised."""

    def wrap(method: GrpcMethod) -> GrpcMethod:
        @functools.wraps(method)
        async def answer(self: Any, request: Any, grpc_context: RayServegRPCContext) -> Any:
            try:
                return await method(self, request, grpc_context)
            except ProtocolError as err:
                grpc_context.set_code(grpc_protocol.status_code(err.status))
                grpc_context.set_details(err.message)
                return empty()
            except Exception:
                log.exception("unexpected error on a gRPC call")
                grpc_context.set_code(grpc_protocol.status_code(500))
                grpc_context.set_details("internal error; the server log has the details")
                raise

        return answer

    return wrap


#: Models slower than this per single-row call run in a thread, so requests are parsed while the model computes
#: (TensorFlow and TensorFlow Lite release the GIL); faster ones run inline, where the hand-off would cost more than
#: it saves (figures: docs/performance.md#serving-model-calls-in-a-thread).
OFFLOAD_ABOVE_S = 0.001
#: A shadow candidate holds at most this many batches' worth of requests; more are dropped, not queued.
SHADOW_IN_FLIGHT_BATCHES = 2
#: OIP server metadata: the extensions this server has, by Triton's names.
SERVER_EXTENSIONS = ["model_repository_stats", "binary_tensor_data"]


@dataclass
class Slot:
    """A loaded model version with its own batch queue."""

    model: LoadedModel
    run_batch: DynamicBatcher
    version_label: str


class ModelServer:
    """Ingress and model replica in one."""

    # Serve awaits an async constructor (the stats push starts on the replica's loop); mypy wants __init__ -> None.
    async def __init__(self, stats: DeploymentHandle[StatsCollector], max_body_bytes: int):  # type: ignore[misc]
        self.max_body_bytes = max_body_bytes
        self.token: bytes | None = None
        self.model_name = ""
        self.primary: Slot | None = None
        self.canary: Slot | None = None
        self.canary_percent = 0
        self.shadow: ShadowScorer | None = None
        self.requested: dict[str, str] = {}
        self.loaded: dict[tuple[str, str, int | None], LoadedModel] = {}  # by (uri, runtime, version)
        self.telemetry = Telemetry(stats, self._roles)
        self.replica = serve.get_replica_context().replica_id.unique_id
        threads = size_thread_pools(ray.get_runtime_context().get_assigned_resources().get("CPU"))
        log.info("TensorFlow thread pools: %s", threads or "TensorFlow's own sizing")
        self.telemetry.start()

    # ----- configuration -------------------------------------------------------------------------
    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply models, split and batching in place; new models load before they take traffic."""
        args = ServeAppArgs.model_validate(config)
        token = os.environ.get(args.auth_token_env, "") if args.auth_token_env else None
        if token == "":
            raise RuntimeError(f"auth is on but ${args.auth_token_env} is empty: mount the token Secret into the pods")
        targets = [args.primary, *([args.canary] if args.canary else [])]
        wanted = [(target.uri, args.runtime, target.version) for target in targets]
        for key in wanted:
            if key not in self.loaded:
                self.loaded[key] = await asyncio.to_thread(load_model, *key)
        self.loaded = {key: self.loaded[key] for key in wanted}
        self.model_name = self.telemetry.model_name = args.model_name
        self.primary = self._slot(self.loaded[wanted[0]], args)
        self.canary = self._slot(self.loaded[wanted[1]], args) if args.canary else None
        shadow = args.canary is not None and args.canary.mode == "shadow"
        self.canary_percent = args.canary.traffic_percent if args.canary and not shadow else 0
        self._shadow(args)
        self.requested = {"primary": args.primary.uri} | ({"canary": args.canary.uri} if args.canary else {})
        self.token = token.encode() if token else None
        log.info(
            "serving %s: primary %s (%s), canary %s at %d%%%s",
            self.model_name,
            self.primary.version_label,
            self.primary.model.call_path,
            self.canary.version_label if self.canary else "-",
            self.canary_percent,
            f", scoring {self.shadow.percent}% in shadow" if self.shadow else "",
        )

    def _shadow(self, args: ServeAppArgs) -> None:
        """In shadow mode, the candidate scores a share of the requests the primary answered."""
        if self.shadow is not None:
            self.shadow.stop()
            self.shadow = None
        if self.canary is None or args.canary is None or args.canary.mode != "shadow":
            return
        self.shadow = ShadowScorer(
            self.canary.run_batch,
            self.canary.version_label,
            self.canary.model.card,
            self.telemetry,
            percent=args.canary.shadow_percent,
            tolerance=args.canary.agreement_tolerance,
            max_in_flight=SHADOW_IN_FLIGHT_BATCHES * args.batching.max_batch_size,
        )

    def _roles(self) -> dict[str, dict[str, Any]]:
        shadow_percent = self.shadow.percent if self.shadow is not None else None
        return roles(self.primary, self.canary, self.requested, self.canary_percent, shadow_percent)

    def _slot(self, model: LoadedModel, args: ServeAppArgs) -> Slot:
        label = str(model.version) if model.version is not None else "unversioned"
        batcher = DynamicBatcher(
            model.predict,
            args.batching.max_batch_size,
            args.batching.batch_wait_timeout_ms / 1000.0,
            offload=model.single_row_seconds > OFFLOAD_ABOVE_S,
            on_batch=self.telemetry.batch_counter(label),
        )
        return Slot(model, batcher, label)

    # ----- request path ------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        path = str(request.scope.get("path") or "/").rstrip("/") or "/"  # not request.url: it builds a whole URL
        try:
            return await self._route(request, path, started)
        except ProtocolError as err:
            return error_response(err.status, err.message)
        except ClientDisconnect:  # the client left before its body arrived: no one to answer
            return Response(status_code=499)
        except Exception:  # a bug of ours: still answer in JSON, and keep serving
            log.exception("unexpected error on %s %s", request.method, path)
            return error_response(500, "internal error; the server log has the details")

    async def _route(self, request: Request, path: str, started: float) -> Response:
        route = resolve(request.method, path)
        endpoint = route.endpoint
        if route.model is not None and route.model != self.model_name:
            raise ProtocolError(404, f"unknown model {route.model!r}: this server serves {self.model_name!r}")
        slot = None if route.version is None else self._slot_for_version(route.version)
        if endpoint.auth is Auth.BEFORE_METHOD:
            authorize(request, self.token)
        if route.refusal is not None:
            raise ProtocolError(*route.refusal)
        if endpoint.auth is Auth.AFTER_METHOD:
            authorize(request, self.token)
        if endpoint is V2_INFER:
            return await self._infer_v2(request, slot, started)
        if endpoint is V1_PREDICT:
            return await self._predict_v1(request, started)
        if endpoint is LIVE or endpoint is READY:
            ready = self.primary is not None
            return json_response(200 if ready or endpoint is LIVE else 503, {endpoint.name: ready or endpoint is LIVE})
        if endpoint is V1_MODEL:
            return json_response(200, {"name": route.model, "ready": self.primary is not None})
        if endpoint is V2_MODEL_READY:
            return json_response(200, {"name": route.model, "ready": True})
        if endpoint is V2_STATS:  # open like health: counts and latencies only, read by the operator
            return json_response(200, await self.telemetry.stats.snapshot.remote())
        if endpoint is V2_METADATA:
            return json_response(200, self._metadata(slot))
        return json_response(200, {"name": "trainserve", "version": "v2", "extensions": SERVER_EXTENSIONS})

    def _slot_for_version(self, version: str) -> Slot:
        for slot in (self.primary, self.canary):
            if slot is not None and slot.version_label == version:
                return slot
        raise ProtocolError(404, f"version {version} is not served here")

    def _pick(self) -> Slot:
        if self.primary is None:
            raise ProtocolError(503, "the model is still loading")
        if self.canary is not None and random.random() * 100 < self.canary_percent:
            return self.canary
        return self.primary

    async def _predict_v1(self, request: Request, started: float) -> Response:
        slot = self._pick()
        try:
            rows = parse_v1(await read_body(request, self.max_body_bytes), slot.model.n_features)
        except ProtocolError as err:
            self.telemetry.count(slot.version_label, "v1", err.status, started, 0)
            raise
        predictions = await self._run(slot, rows, "v1", started)
        body = {"predictions": predictions, "model_version": slot.version_label}
        return json_response(200, body, self._headers(slot))

    def _headers(self, slot: Slot) -> dict[str, str]:
        """Which version answered (canary or primary), and which replica: the split and rollouts are visible."""
        return {"x-model-version": slot.version_label, "x-trainserve-replica": self.replica}

    async def _infer_v2(self, request: Request, pinned: Slot | None, started: float) -> Response:
        slot = pinned or self._pick()
        model = slot.model
        try:
            body = await read_body(request, self.max_body_bytes)
            parsed = parse_v2(body, model.inputs[0], model.outputs, request.headers.get(HEADER_LENGTH_HEADER))
        except ProtocolError as err:
            self.telemetry.count(slot.version_label, "v2", err.status, started, 0)
            raise
        predictions = await self._run(slot, parsed.rows, "v2", started)
        output = model.outputs[0]
        if output.name in parsed.binary_outputs:
            content, length = v2_binary_response(self.model_name, model.version, parsed.request_id, output, predictions)
            return binary_tensor_response(content, length, self._headers(slot))
        answer = v2_response(self.model_name, model.version, parsed.request_id, output, predictions)
        return json_response(200, answer, self._headers(slot))

    async def _run(self, slot: Slot, rows: np.ndarray, protocol: str, started: float) -> np.ndarray:
        try:
            predictions: np.ndarray = await slot.run_batch(rows)
        except Exception as err:
            log.exception("model call failed")
            self.telemetry.count(slot.version_label, protocol, 500, started, len(rows))
            raise ProtocolError(500, f"the model failed on this request: {type(err).__name__}") from None
        self.telemetry.count(slot.version_label, protocol, 200, started, len(rows))
        if self.shadow is not None and slot is self.primary:
            self.shadow.offer(rows, predictions)
        return predictions

    # ----- OIP over gRPC: Serve's direct ingress calls the method named like the RPC with the decoded request
    # (ray/serve/_private/replica.py, _direct_ingress_grpc_unary_response); a status set on ``grpc_context``
    # reaches the client as the call's status (replica.py, ``_set_on_grpc_context``).
    async def ServerLive(self, request: Any, grpc_context: RayServegRPCContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, grpc_context: RayServegRPCContext) -> Any:
        return pb.ServerReadyResponse(ready=self.primary is not None)

    @grpc_answer(pb.ServerMetadataResponse)
    async def ServerMetadata(self, request: Any, grpc_context: RayServegRPCContext) -> Any:
        self._grpc_authorize(grpc_context)
        return pb.ServerMetadataResponse(name="trainserve", version="v2", extensions=SERVER_EXTENSIONS)

    @grpc_answer(pb.ModelReadyResponse)
    async def ModelReady(self, request: Any, grpc_context: RayServegRPCContext) -> Any:
        self._grpc_target(request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    @grpc_answer(pb.ModelMetadataResponse)
    async def ModelMetadata(self, request: Any, grpc_context: RayServegRPCContext) -> Any:
        slot = self._grpc_target(request.name, request.version)
        self._grpc_authorize(grpc_context)
        return pb.ModelMetadataResponse(**self._metadata(slot))

    @grpc_answer(pb.ModelInferResponse)
    async def ModelInfer(self, request: Any, grpc_context: RayServegRPCContext) -> Any:
        started = time.perf_counter()
        pinned = self._grpc_target(request.model_name, request.model_version)
        self._grpc_authorize(grpc_context)
        grpc_protocol.check_size(request, self.max_body_bytes)
        slot = pinned or self._pick()
        model = slot.model
        try:
            parsed = grpc_protocol.parse_infer(request, model.inputs[0], model.outputs)
        except ProtocolError as err:
            self.telemetry.count(slot.version_label, "grpc", err.status, started, 0)
            raise
        predictions = await self._run(slot, parsed.rows, "grpc", started)
        return grpc_protocol.infer_response(
            self.model_name, model.version, parsed.request_id, model.outputs[0], predictions
        )

    def _grpc_target(self, model_name: str, version: str) -> Slot | None:
        """The slot a version names ('' names none), after a 404 for a model or version not served here."""
        if model_name != self.model_name:
            raise ProtocolError(404, f"unknown model {model_name!r}: this server serves {self.model_name!r}")
        return self._slot_for_version(version) if version else None

    def _grpc_authorize(self, grpc_context: RayServegRPCContext) -> None:
        if self.token is not None:
            check_bearer(grpc_protocol.bearer(grpc_context.invocation_metadata()), self.token)

    def _metadata(self, slot: Slot | None) -> dict[str, Any]:
        model = (slot or self.primary or self._pick()).model
        versions = [s.version_label for s in (self.primary, self.canary) if s is not None]
        return v2_metadata(
            self.model_name, versions if slot is None else [slot.version_label], model.inputs, model.outputs
        )


def build_app(args: dict[str, Any]) -> Any:
    """The application builder that KubeRay's ``serveConfigV2`` imports (``trainserve_workloads.serve:app``).

    From a Serve config, ``args`` hold only ``maxBodyBytes`` and the deployment entries carry the rest
    (see :func:`trainserve.serveconfig.serve_application`); given full :class:`ServeAppArgs` (for
    ``serve run``), the builder sets the deployment options itself.
    """
    collector = serve.deployment(
        name=STATS_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0}, logging_config=REPLICA_LOGGING
    )(StatsCollector)
    server = serve.deployment(name=MODEL_DEPLOYMENT, logging_config=REPLICA_LOGGING)(ModelServer)
    max_body = int(args.get("maxBodyBytes", DEFAULT_MAX_BODY_BYTES))
    if "primary" in args:
        full = ServeAppArgs.model_validate(args)
        server = server.options(**deployment_options(full))
        max_body = full.max_body_bytes
    return server.bind(collector.bind(), max_body)
