"""The contract between a ModelService and the serving application: the resolved application arguments.

The operator (into the RayService's ``serveConfigV2``) and `trainserve local serve` build the same
:class:`ServeAppArgs`; the Ray Serve application ``trainserve_workloads.serve:app`` reads only this.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import ApiModel
from .modelservice import (
    DEFAULT_AGREEMENT_TOLERANCE,
    DEFAULT_SHADOW_PERCENT,
    AutoscalingSpec,
    BatchingSpec,
    CanaryMode,
    ModelRegistry,
    ModelRuntime,
    ModelService,
    OverloadSpec,
    ServingResources,
)

#: Environment variable that carries the bearer token into the serving replicas.
AUTH_TOKEN_ENV = "TRAINSERVE_AUTH_TOKEN"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Where replicas download ``mlflow-artifacts:/`` model files from (MLflow's own variable name).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


class ModelTarget(ApiModel):
    """One model version to load: a version folder, or an output folder (its newest version)."""

    uri: str = Field(min_length=1, description="Model location.")
    version: int | None = Field(None, description="Version number, when known before loading.")


class CanaryTarget(ModelTarget):
    traffic_percent: int = Field(ge=0, le=100, description="Share of requests the canary answers.")
    mode: CanaryMode = Field("split", description="`split`, or `shadow`: it scores requests the primary answered.")
    shadow_percent: int = Field(
        DEFAULT_SHADOW_PERCENT, ge=1, le=100, description="Shadow mode: share of requests the candidate scores."
    )
    agreement_tolerance: float = Field(
        DEFAULT_AGREEMENT_TOLERANCE, ge=0.0, description="Shadow mode: how far a regression's output may differ."
    )


class ServeAppArgs(ApiModel):
    """Everything the serving application needs, fully resolved."""

    model_name: str = Field(description="Name in the inference URLs.")
    primary: ModelTarget = Field(description="The model answering most requests.")
    canary: CanaryTarget | None = Field(None, description="A second version taking a share of traffic.")
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Dynamic batching.")
    runtime: ModelRuntime = Field("auto", description="How replicas run the model: `auto` or `tensorflow`.")
    replicas: int = Field(1, ge=0, description="Fixed replicas when `autoscaling` is unset.")
    autoscaling: AutoscalingSpec | None = Field(None, description="Serve autoscaling.")
    resources: ServingResources = Field(default_factory=ServingResources, description="Per-replica resources.")
    overload: OverloadSpec = Field(default_factory=OverloadSpec, description="Load shedding.")
    auth_token_env: str | None = Field(
        None, description="Environment variable holding the bearer token; unset: no auth."
    )
    grpc_port: int | None = Field(
        None, description="Port of the OIP gRPC service (Serve's `grpc_options`); unset: no gRPC."
    )
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="Largest request body accepted.")
    runtime_env: dict[str, Any] | None = Field(
        None,
        description="Ray's runtime_env of the application (pip, env_vars, working_dir); a change restarts replicas.",
    )

    def dynamic_config(self) -> dict[str, Any]:
        """What replicas apply in place on a change (Serve ``user_config``): models, split, batching, runtime, auth."""
        config = self.model_dump(
            mode="json",
            by_alias=True,
            include={"model_name", "primary", "canary", "batching", "runtime", "auth_token_env"},
        )
        canary = config.get("canary")
        if canary is not None and canary["mode"] == "split":  # as before shadow mode: no change for split canaries
            for key in ("mode", "shadowPercent", "agreementTolerance"):
                del canary[key]
        return config


def serve_args(
    service: ModelService,
    primary: ModelTarget,
    canary: ModelTarget | None,
    canary_percent: int | None = None,
    canary_mode: CanaryMode | None = None,
) -> ServeAppArgs:
    """The application arguments for a ModelService whose models are resolved to concrete locations.

    ``canary_percent`` and ``canary_mode``: the canary's current share and mode (automatic promotion moves them);
    default the spec's.
    """
    spec = service.spec
    canary_target = None
    if canary is not None and spec.canary is not None:
        mode = canary_mode or spec.canary.mode
        share = spec.canary.traffic_percent if canary_percent is None else canary_percent
        canary_target = CanaryTarget(
            uri=canary.uri,
            version=canary.version,
            traffic_percent=0 if mode == "shadow" else share,
            mode=mode,
            shadow_percent=spec.canary.shadow_percent or DEFAULT_SHADOW_PERCENT,
            agreement_tolerance=(
                DEFAULT_AGREEMENT_TOLERANCE
                if spec.canary.agreement_tolerance is None
                else spec.canary.agreement_tolerance
            ),
        )
    return ServeAppArgs(
        model_name=spec.model_name or service.metadata.name or "model",
        primary=primary,
        canary=canary_target,
        batching=spec.batching,
        runtime=spec.runtime,
        replicas=spec.replicas,
        autoscaling=spec.autoscaling,
        resources=spec.resources,
        overload=spec.overload,
        auth_token_env=AUTH_TOKEN_ENV if spec.auth is not None else None,
        grpc_port=spec.grpc.port if spec.grpc.enabled else None,
        runtime_env=_runtime_env(service),
    )


def _runtime_env(service: ModelService) -> dict[str, Any] | None:
    """The spec's runtime_env; with a registry, replicas also learn where ``mlflow-artifacts:/`` files come from."""
    spec = service.spec
    runtime_env = spec.runtime_env.to_ray() if spec.runtime_env is not None else {}
    registries = model_registries(service)
    if registries:
        env_vars = {TRACKING_URI_ENV: registries[0].tracking_uri} | runtime_env.get("env_vars", {})
        runtime_env["env_vars"] = env_vars
    return runtime_env or None


def model_registries(service: ModelService) -> list[ModelRegistry]:
    """The model registries the spec's models are resolved through (the primary's, the canary's)."""
    spec = service.spec
    canary = spec.canary.model if spec.canary is not None else None
    refs = [spec.model, *([canary] if canary is not None else [])]
    return [ref.registry for ref in refs if ref.registry is not None]
