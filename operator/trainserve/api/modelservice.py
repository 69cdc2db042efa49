"""The ModelService resource: a trained model served by Ray Serve with KServe v1 and OIP v2 endpoints."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from trainserve.naming import MAX_MODELSERVICE_NAME, MODELSERVICE_NAME_LIMIT, name_rules

from .base import (
    CONDITIONS_LIST,
    MAX_IMAGE,
    MAX_OBJECT_NAME,
    MAX_PLACEMENT_ENTRIES,
    MAX_QUALIFIED_NAME,
    MAX_QUANTITY,
    MAX_URI,
    OBJECT_NAME_PATTERN,
    QUANTITY_PATTERN,
    RESOURCE_NAME_PATTERN,
    ApiModel,
    Condition,
    CpuQuantity,
    LabelKey,
    LabelValue,
    ObjectMeta,
    Resource,
    SecretKeyRef,
    SecretRef,
    StatusModel,
    Toleration,
    cpus_field,
    exactly_one_rule,
    require_exactly_one,
    rule_error,
    section,
)
from .podtemplate import MODELSERVICE_ENV, POD_TEMPLATE_DESCRIPTION, PodTemplate, check_env, env_rule
from .runtimeenv import RuntimeEnvSpec

MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
CanaryState = Literal["Progressing", "Promoted", "RolledBack", "Paused"]
UpgradeType = Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]
#: How long a RayService upgrade may wait for its new cluster before a Warning (like a Deployment's
#: ``progressDeadlineSeconds``, which also defaults to 600).
DEFAULT_UPGRADE_DEADLINE_SECONDS = 600
ModelRuntime = Literal["auto", "tensorflow"]
Rollout = Literal["replace", "canary"]
CanaryMode = Literal["split", "shadow"]
AfterShadow = Literal["primary", "split"]
#: Share of live requests a shadow candidate scores, and the regression tolerance, when the spec leaves them out.
DEFAULT_SHADOW_PERCENT = 100
DEFAULT_AGREEMENT_TOLERANCE = 0.01
#: A metric name in `minMetrics`, such as `val_sparse_top_k_categorical_accuracy`.
MAX_METRIC_NAME = 64
#: Thresholds in one `minMetrics`.
MAX_MIN_METRICS = 32
#: Rolled-back versions remembered in `status.model.rejectedVersions` (the oldest go first).
MAX_REJECTED_VERSIONS = 20


class FromTrainingJob(ApiModel):
    """Serve the model of a TrainingJob in the same namespace, once it has succeeded."""

    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=MAX_OBJECT_NAME, description="Name of the TrainingJob.")
    min_metrics: dict[Annotated[str, Field(max_length=MAX_METRIC_NAME)], float] = Field(
        default_factory=dict,
        max_length=MAX_MIN_METRICS,
        description="Thresholds the model's metrics must reach before it is served, e.g. `val_accuracy: 0.9`; "
        "a newer version of the job's model is rolled out only when it passes them too.",
    )
    rollout: Rollout = Field(
        "replace",
        description="How a newer passing version of the job's model enters. `replace`: it serves all requests at "
        "once. `canary`: it runs as the canary under `spec.canary` (a `canary` block without `model`, with "
        "`autoPromote`), is promoted on its live figures or rolled back; a rolled-back version is listed in "
        "`status.model.rejectedVersions` and not tried again, the next newer version is.",
    )


#: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``: MLflow's model registry URIs.
REGISTRY_SCHEME = "models:/"
REGISTRY_URI_PATTERN = r"^models:/[^/@ ]+(/[0-9]+|@[A-Za-z0-9_-]+)$"


class ModelRegistry(ApiModel):
    """The MLflow tracking server that resolves a `models:/` URI (MLflow's model registry)."""

    tracking_uri: str = Field(
        min_length=1,
        max_length=MAX_URI,
        pattern=r"^https?://",
        description="The MLflow tracking server, `http(s)://HOST[:PORT]`. The operator asks it which version the "
        "URI names (with the credentials of its own install, see docs/install.md); the replicas download that "
        "version's artifacts from it.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        None,
        description="Secret whose keys (e.g. `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and "
        "`MLFLOW_TRACKING_PASSWORD`) become environment variables of the Ray pods, to download the artifacts.",
    )
    resolve_interval_seconds: int = Field(
        60,
        ge=5,
        le=86400,
        description="How often the URI is resolved again: moving an alias (or registering the version a URI "
        "names) rolls the service to it in place.",
    )


class ModelRef(ApiModel):
    """Which model to serve. Exactly one of `uri` or `fromTrainingJob`."""

    uri: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_URI,
        description="Location of a model written by a TrainingJob: a version folder `<output.uri>/<version>`, "
        "or `<output.uri>` for its newest version; or a registered model, `models:/NAME/VERSION` or "
        "`models:/NAME@ALIAS`, with `registry`.",
    )
    from_training_job: FromTrainingJob | None = Field(None, description="Serve the model a TrainingJob produced.")
    registry: ModelRegistry | None = Field(None, description="Where a `models:/` URI is resolved.")

    CEL: ClassVar[list[dict[str, str]]] = [
        exactly_one_rule("uri", "fromTrainingJob"),
        {
            "rule": f"!has(self.uri) || !self.uri.startsWith('{REGISTRY_SCHEME}') || "
            f"self.uri.matches('{REGISTRY_URI_PATTERN}')",
            "message": "a registry URI is models:/NAME/VERSION or models:/NAME@ALIAS",
        },
        {
            "rule": f"(has(self.uri) && self.uri.startsWith('{REGISTRY_SCHEME}')) == has(self.registry)",
            "message": "a models:/ uri needs registry.trackingUri, and registry is only for models:/ URIs",
        },
    ]

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelRef:
        require_exactly_one("model", uri=self.uri, fromTrainingJob=self.from_training_job)
        registered = self.uri is not None and self.uri.startswith(REGISTRY_SCHEME)
        if registered and not re.match(REGISTRY_URI_PATTERN, self.uri or ""):
            raise rule_error(
                f"{self.uri!r} is not a registry URI",
                "write models:/NAME/VERSION (a version number) or models:/NAME@ALIAS",
                at=".uri",
            )
        if registered and self.registry is None:
            raise rule_error(
                f"{self.uri!r} names a registered model but no registry resolves it",
                "add registry.trackingUri: the MLflow tracking server that holds the model registry",
            )
        if self.registry is not None and not registered:
            raise rule_error(
                "registry is set but the model is not a models:/ URI",
                "remove registry, or set uri to models:/NAME/VERSION or models:/NAME@ALIAS",
                at=".registry",
            )
        return self


class BatchingSpec(ApiModel):
    """Dynamic batching of concurrent requests into one model call."""

    max_batch_size: int = Field(32, ge=1, le=4096, description="Most requests combined into one model call.")
    batch_wait_timeout_ms: float = Field(
        0.0,
        ge=0.0,
        le=10000.0,
        description=(
            "How long a batch may wait to fill. 0 still batches whatever is queued and never delays a lone request;"
            " a model slower than 1 ms a row may still hold its next batch, for up to half its last call and at most"
            " 10 ms, until the clients that call answered are back."
        ),
    )


class OverloadSpec(ApiModel):
    """What a replica does with requests beyond what it can answer soon: it holds a bounded number waiting, and
    answers the rest `503` with `Retry-After` at once (Ray Serve's `max_queued_requests`), so latency and
    memory stay bounded and a client or load balancer can go elsewhere."""

    max_queued_requests: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Requests a replica holds waiting beyond those it runs; more get `503`. "
        "Default: as many as it runs (twice `batching.maxBatchSize`, at least 8).",
    )
    retry_after_seconds: int = Field(1, ge=0, le=3600, description="`Retry-After` of those `503` answers.")


class AutoscalingSpec(ApiModel):
    """Ray Serve autoscaling by ongoing requests per replica. When set, `replicas` is ignored."""

    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas; 0 scales to zero when idle.")
    max_replicas: int = Field(4, ge=1, le=1000, description="Most replicas.")
    target_ongoing_requests: float | None = Field(
        None,
        gt=0.0,
        description="Ongoing requests per replica to aim for; default: half of `batching.maxBatchSize`, at least 2.",
    )
    upscale_delay_seconds: float = Field(30.0, ge=0.0, description="How long load must stay high before scaling up.")
    downscale_delay_seconds: float = Field(
        600.0, ge=0.0, description="How long load must stay low before scaling down."
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
    ]

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise rule_error(
                f"minReplicas ({self.min_replicas}) exceeds maxReplicas ({self.max_replicas})",
                "lower `minReplicas` or raise `maxReplicas`",
            )
        return self


class ServingResources(ApiModel):
    """Resources of each serving replica, and where replicas may run."""

    cpus_per_replica: CpuQuantity = cpus_field(
        "CPUs per replica, as Kubernetes takes them: a number (`1`, `0.5`) or a quantity string "
        '(`"1"`, `"500m"`, `"0.25"`), above 0. Replicas of less than a CPU share a worker pod.',
    )
    memory_per_replica: str = Field(
        "2Gi",
        pattern=QUANTITY_PATTERN,
        max_length=MAX_QUANTITY,
        description="Memory per replica, as a Kubernetes quantity such as `2Gi`.",
    )
    gpus_per_replica: float = Field(
        0.0, ge=0.0, le=16, description="GPUs per replica; a fraction shares one GPU between replicas."
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu",
        pattern=RESOURCE_NAME_PATTERN,
        max_length=MAX_QUALIFIED_NAME,
        description="Extended resource name of the GPU.",
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_PLACEMENT_ENTRIES, description="Node labels the serving pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=MAX_PLACEMENT_ENTRIES,
        description="Tolerations for the serving pods (the GPU taint's is added automatically when GPUs are requested).",
    )


class AutoPromote(ApiModel):
    """Raise the canary's share step by step while its figures stay healthy; roll back on a breach."""

    step_percent: int = Field(10, ge=1, le=100, description="Share added at each healthy step.")
    interval_seconds: int = Field(60, ge=5, description="Seconds between evaluations.")
    min_requests: int = Field(
        100, ge=1, description="Requests the canary must have served in a step before it is judged."
    )
    max_error_rate: float = Field(
        0.01, ge=0.0, le=1.0, description="Highest acceptable share of failed canary requests."
    )
    max_latency_p95_ms: float | None = Field(
        None, gt=0.0, description="Highest acceptable canary p95 latency; unset: not checked."
    )
    min_agreement: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Shadow mode only, and required there: the lowest share of scored rows on which the candidate "
        "agrees with the primary (same class for classifiers, within `canary.agreementTolerance` for regressions). "
        "The other limits apply to the candidate's shadow calls; `minRequests` counts requests it scored.",
    )
    after_shadow: AfterShadow | None = Field(
        None,
        description="Shadow mode only: where a candidate that passes goes. `primary` (default): it serves all "
        "requests at once. `split`: it takes `canary.trafficPercent` of the requests and is promoted step by step "
        "like a split canary.",
    )


class CanarySpec(ApiModel):
    """A second model version that takes a share of the traffic, or scores it in the shadow of the primary."""

    model: ModelRef | None = Field(
        None,
        description="The canary model (same forms as `spec.model`). Leave it out with `spec.model.fromTrainingJob."
        "rollout: canary`: the block is then the policy for the versions that arrive from the job.",
    )
    traffic_percent: int = Field(
        10,
        ge=0,
        le=100,
        description="Share of requests the canary answers, 0-100 (in shadow mode: once it moves to split mode).",
    )
    auto_promote: AutoPromote | None = Field(None, description="Promote automatically on healthy figures.")
    mode: CanaryMode = Field(
        "split",
        description="`split`: the canary answers `trafficPercent` of the requests. `shadow`: the primary answers "
        "every request; after it has answered, the candidate (loaded in the same replicas) scores `shadowPercent` "
        "of them in the background, and the replicas count how often it agrees with the primary and how fast it is. "
        "Shadow work is dropped, never queued without bound, when the candidate falls behind.",
    )
    shadow_percent: int | None = Field(
        None,
        ge=1,
        le=100,
        description=f"Shadow mode only: share of requests the candidate scores, 1-100; default {DEFAULT_SHADOW_PERCENT}.",
    )
    agreement_tolerance: float | None = Field(
        None,
        ge=0.0,
        le=1000000.0,
        description="Shadow mode only: how far a regression's output may be from the primary's and still agree "
        "(|candidate - primary| <= tolerance * max(1, |primary|)); "
        f"default {DEFAULT_AGREEMENT_TOLERANCE}. Classifiers agree on the same class.",
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.mode == 'shadow' || (!has(self.shadowPercent) && !has(self.agreementTolerance) && "
            "(!has(self.autoPromote) || (!has(self.autoPromote.minAgreement) && !has(self.autoPromote.afterShadow))))",
            "message": "shadowPercent, agreementTolerance, autoPromote.minAgreement and autoPromote.afterShadow "
            "apply only to mode shadow",
        },
        {
            "rule": "self.mode != 'shadow' || !has(self.autoPromote) || has(self.autoPromote.minAgreement)",
            "message": "mode shadow with autoPromote needs autoPromote.minAgreement",
        },
    ]

    @model_validator(mode="after")
    def _shadow_fields_match_mode(self) -> CanarySpec:
        auto = self.auto_promote
        if self.mode != "shadow":
            shadow_only = {
                "shadowPercent": self.shadow_percent,
                "agreementTolerance": self.agreement_tolerance,
                "autoPromote.minAgreement": auto.min_agreement if auto else None,
                "autoPromote.afterShadow": auto.after_shadow if auto else None,
            }
            for name, value in shadow_only.items():
                if value is not None:
                    raise rule_error(
                        f"{name} applies only to mode shadow, and the mode is {self.mode}",
                        f"remove `{name}`, or set `mode: shadow`",
                        at=f".{name}",
                    )
        elif auto is not None and auto.min_agreement is None:
            raise rule_error(
                "mode shadow promotes on agreement, but autoPromote.minAgreement is not set",
                "add `minAgreement` (e.g. 0.95: the share of rows on which the candidate must agree with the primary)",
                at=".autoPromote.minAgreement",
            )
        return self


class AuthSpec(ApiModel):
    """Bearer-token authentication of inference requests (health endpoints stay open)."""

    token_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the token clients send as `Authorization: Bearer <token>`."
    )


#: Ports the Ray pods already use below 10000 (GCS, Serve's HTTP, metrics, dashboard): gRPC may not take them.
RAY_POD_PORTS = (6379, 8000, 8080, 8265)
DEFAULT_GRPC_PORT = 9000


class GrpcSpec(ApiModel):
    """The Open Inference Protocol over gRPC (KServe's and Triton's `inference.GRPCInferenceService`), answered by
    the same replicas, models, batches and canary split as REST, with the same bearer token (in the call's
    `authorization` metadata)."""

    enabled: bool = Field(True, description="Serve gRPC next to REST.")
    port: int = Field(
        DEFAULT_GRPC_PORT,
        ge=1024,
        le=9999,
        description="Port of the gRPC service on the Ray pods (below Ray's worker ports, not one of "
        f"{', '.join(map(str, RAY_POD_PORTS))}); a change replaces the Ray cluster (Serve cannot move it).",
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": " && ".join(f"self.port != {number}" for number in RAY_POD_PORTS),
            "message": f"port must not be one the Ray pods use: {', '.join(map(str, RAY_POD_PORTS))}",
        },
    ]

    @model_validator(mode="after")
    def _free_port(self) -> GrpcSpec:
        if self.port in RAY_POD_PORTS:
            raise rule_error(
                f"port {self.port} is taken by Ray on the serving pods",
                f"pick another port from 1024 to 9999, e.g. {DEFAULT_GRPC_PORT}",
                at=".port",
            )
        return self


class ClusterUpgradeOptions(ApiModel):
    """How `NewClusterWithIncrementalUpgrade` moves traffic: KubeRay's `clusterUpgradeOptions`, through a Gateway API
    route (KubeRay's `RayServiceIncrementalUpgrade` feature gate, on by default in KubeRay v1.7, and Gateway API CRDs)."""

    gateway_class_name: str = Field(
        pattern=OBJECT_NAME_PATTERN,
        max_length=MAX_OBJECT_NAME,
        description="The GatewayClass (installed by the cluster admin) of the Gateway KubeRay creates.",
    )
    step_size_percent: int = Field(
        ge=1, le=100, description="Share of traffic moved to the new cluster at each step; at most `maxSurgePercent`."
    )
    interval_seconds: int = Field(ge=1, le=86400, description="Seconds between two traffic steps.")
    max_surge_percent: int = Field(
        100, ge=1, le=100, description="Capacity the new cluster scales up by before each traffic step, in percent."
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "self.stepSizePercent <= self.maxSurgePercent",
            "message": "stepSizePercent must not exceed maxSurgePercent",
        },
    ]

    @model_validator(mode="after")
    def _step_within_surge(self) -> ClusterUpgradeOptions:
        if self.step_size_percent > self.max_surge_percent:
            raise rule_error(
                f"stepSizePercent ({self.step_size_percent}) exceeds maxSurgePercent ({self.max_surge_percent})",
                "lower `stepSizePercent` or raise `maxSurgePercent`",
            )
        return self


class UpgradeStrategy(ApiModel):
    """How KubeRay rolls the Ray cluster when a change needs a new one (resources, `podTemplate`, image); model and
    traffic changes are applied in place whatever the strategy."""

    type: UpgradeType = Field(
        "NewCluster",
        description="`NewCluster`: a second cluster of full size starts, takes all traffic once ready, then the old one "
        "goes (twice the resources for a while). `NewClusterWithIncrementalUpgrade`: the new cluster grows and takes "
        "traffic step by step (`clusterUpgradeOptions`). `None`: no new cluster; such changes wait until the type changes.",
    )
    cluster_upgrade_options: ClusterUpgradeOptions | None = Field(
        None, description="Steps of `NewClusterWithIncrementalUpgrade`; required with it, refused with the others."
    )
    progress_deadline_seconds: int = Field(
        DEFAULT_UPGRADE_DEADLINE_SECONDS,
        ge=1,
        le=604800,
        description="How long an upgrade may wait for its new cluster (e.g. for free GPUs) before `Stalled`, "
        "`Upgrading` reason `UpgradeStuck` and a Warning Event; the old cluster keeps serving meanwhile.",
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.clusterUpgradeOptions) == (self.type == 'NewClusterWithIncrementalUpgrade')",
            "message": "clusterUpgradeOptions is required with type NewClusterWithIncrementalUpgrade and refused "
            "with the other types",
        },
    ]

    @model_validator(mode="after")
    def _options_match_type(self) -> UpgradeStrategy:
        incremental = self.type == "NewClusterWithIncrementalUpgrade"
        if incremental and self.cluster_upgrade_options is None:
            raise rule_error(
                "type NewClusterWithIncrementalUpgrade needs clusterUpgradeOptions",
                "add `clusterUpgradeOptions` with `gatewayClassName`, `stepSizePercent` and `intervalSeconds`",
            )
        if not incremental and self.cluster_upgrade_options is not None:
            raise rule_error(
                f"clusterUpgradeOptions applies only to type NewClusterWithIncrementalUpgrade, not {self.type}",
                "remove `clusterUpgradeOptions`, or set `type: NewClusterWithIncrementalUpgrade`",
            )
        return self


class ModelServiceSpec(ApiModel):
    """The desired state of a ModelService."""

    image: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_IMAGE,
        description="Workload image for the Ray pods; default: the operator's.",
    )
    model: ModelRef = Field(description="The model to serve.")
    model_name: str | None = Field(
        None,
        pattern=MODEL_NAME_PATTERN,
        max_length=128,
        description="Name in the inference URLs (`/v1/models/NAME`, `/v2/models/NAME`); default: `metadata.name`.",
    )
    batching: BatchingSpec = section(BatchingSpec, "Dynamic batching.")
    runtime: ModelRuntime = Field(
        "auto",
        description="How replicas run the model. `auto`: on a CPU, TensorFlow Lite (converted at load, float32, "
        "builtin ops) when it is faster and agrees with the SavedModel on probes to float32 round-off, which small "
        "models gain most from; else TensorFlow. `tensorflow`: always the SavedModel's `serving_default` signature, "
        "bit for bit.",
    )
    replicas: int = Field(1, ge=0, le=1000, description="Fixed number of replicas, used when `autoscaling` is absent.")
    autoscaling: AutoscalingSpec | None = Field(
        None, description="Autoscaling bounds and targets; replaces `replicas`."
    )
    resources: ServingResources = section(ServingResources, "Per-replica resources and placement.")
    overload: OverloadSpec = section(OverloadSpec, "Shedding load a replica cannot answer soon.")
    canary: CanarySpec | None = Field(None, description="A canary version and its traffic share.")
    auth: AuthSpec | None = Field(None, description="Require a bearer token on inference requests.")
    grpc: GrpcSpec = section(GrpcSpec, "The Open Inference Protocol over gRPC, next to REST.")
    runtime_env: RuntimeEnvSpec | None = Field(
        None,
        description="pip packages and environment variables for the serving replicas (Ray's runtime_env of the "
        "Serve application); a change restarts the replicas.",
    )
    storage_secret_ref: SecretRef | None = Field(
        None,
        description="Secret whose keys (e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) become environment "
        "variables of the Ray pods for model downloads; default with `fromTrainingJob`: the job's.",
    )
    pod_template: PodTemplate | None = Field(
        None,
        description=f"{POD_TEMPLATE_DESCRIPTION} A change rolls the Ray cluster, like a change of `resources`.",
    )
    upgrade_strategy: UpgradeStrategy | None = Field(
        None,
        description="How the Ray cluster is replaced when `resources`, `podTemplate` or `image` change (the "
        "RayService's `upgradeStrategy`); default: KubeRay's (`NewCluster`), with a 600 s progress deadline.",
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        env_rule(MODELSERVICE_ENV),
        {
            "rule": "!has(self.canary) || has(self.canary.model) || (has(self.model.fromTrainingJob) && "
            "has(self.model.fromTrainingJob.rollout) && self.model.fromTrainingJob.rollout == 'canary')",
            "message": "canary needs a model, unless model.fromTrainingJob.rollout is canary",
        },
        {
            "rule": "!has(self.model.fromTrainingJob) || !has(self.model.fromTrainingJob.rollout) || "
            "self.model.fromTrainingJob.rollout != 'canary' || "
            "(has(self.canary) && !has(self.canary.model) && has(self.canary.autoPromote))",
            "message": "model.fromTrainingJob.rollout canary needs a canary block without model, with autoPromote",
        },
    ]

    @model_validator(mode="after")
    def _template_leaves_our_env_alone(self) -> ModelServiceSpec:
        check_env(self.pod_template, MODELSERVICE_ENV)
        return self

    @model_validator(mode="after")
    def _canary_matches_rollout(self) -> ModelServiceSpec:
        source = self.model.from_training_job
        job_canary = source is not None and source.rollout == "canary"
        canary = self.canary
        if canary is not None and canary.model is None and not job_canary:
            raise rule_error(
                "canary has no model, and model.fromTrainingJob.rollout is not canary",
                "add `model`, or serve from a TrainingJob with `model.fromTrainingJob.rollout: canary`",
                at=".canary.model",
            )
        if job_canary and (canary is None or canary.model is not None or canary.auto_promote is None):
            raise rule_error(
                "model.fromTrainingJob.rollout canary needs a canary block without model, with autoPromote",
                "add `canary: {autoPromote: {...}}` (the policy for new versions), without `canary.model`",
                at=".model.fromTrainingJob.rollout",
            )
        return self


class ModelLineage(StatusModel):
    """Where a model version served from a TrainingJob came from."""

    training_job: str | None = Field(None, description="Name of the TrainingJob.")
    training_job_uid: str | None = Field(None, description="UID of that TrainingJob (a re-created job has another).")
    attempt: int | None = Field(None, description="The job's attempt that produced the model.")
    dataset_uri: str | None = Field(None, description="The dataset's location, or `builtin:<name>`.")
    dataset_fingerprint: str | None = Field(None, description="SHA-256 of the data the model was trained on.")
    resumed_from: str | None = Field(None, description="The checkpoint the training resumed from, if any.")
    spec_hash: str | None = Field(
        None, description="Digest of the job's model, dataset and training sections (as its checkpoints record)."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="The offline metrics of the training.")


class RejectedVersion(StatusModel):
    """A version from the TrainingJob that was rolled back as a canary, and is not tried again."""

    version: int | None = Field(None, description="Version number.")
    uri: str | None = Field(None, description="Location of the model version.")
    figures: str | None = Field(None, description="The live figures that failed it.")


class ServedModel(StatusModel):
    """A model version being served."""

    uri: str | None = Field(None, description="Location of the model version.")
    version: int | None = Field(None, description="Version number.")
    registered: str | None = Field(
        None, description="The `models:/` URI it was resolved from (`version` is then the registry's)."
    )
    lineage: ModelLineage | None = Field(None, description="Where the model came from (`fromTrainingJob` only).")
    rejected_versions: list[RejectedVersion] | None = Field(
        None,
        max_length=MAX_REJECTED_VERSIONS,
        description="Versions rolled back as canaries under `fromTrainingJob.rollout: canary`, newest last.",
    )


class PromotedModel(ServedModel):
    """A canary promoted to primary, and the `spec.model` location it stands in for."""

    replaces: str | None = Field(None, description="The resolved `spec.model` location when it was promoted.")


class ShadowFigures(StatusModel):
    """What the candidate did in the shadow of the primary over one window."""

    scored: int | None = Field(None, description="Requests the candidate scored.")
    rows: int | None = Field(None, description="Rows in them.")
    agreed: int | None = Field(None, description="Rows on which it agreed with the primary.")
    agreement: float | None = Field(None, description="`agreed` / `rows`.")
    errors: int | None = Field(None, description="Scorings that failed.")
    dropped: int | None = Field(None, description="Requests not scored because the candidate was behind.")
    p95_ms: float | None = Field(None, description="The candidate's p95 latency on them, in milliseconds.")


class CanaryStatus(StatusModel):
    """The canary's current state."""

    uri: str | None = Field(None, description="Location of the canary model version.")
    version: int | None = Field(None, description="Canary version number.")
    traffic_percent: int | None = Field(None, description="Share of traffic the canary answers now.")
    state: CanaryState | None = Field(
        None,
        description="Progressing (automatic promotion under way), Paused (the share stays at the spec's "
        "`trafficPercent`), Promoted or RolledBack (share 0, until `canary.model` changes or a newer version "
        "arrives from the TrainingJob).",
    )
    message: str | None = Field(None, description="The figures behind the last step, promotion or rollback.")
    mode: CanaryMode | None = Field(
        None, description="`split` (the canary answers its share) or `shadow` (it scores requests in the background)."
    )
    shadow: ShadowFigures | None = Field(None, description="Shadow mode: the figures of the last window judged.")


class ServiceEndpoints(StatusModel):
    """Inference URLs inside the cluster."""

    v1: str | None = Field(None, description="KServe v1 predict URL.")
    v2: str | None = Field(None, description="Open Inference Protocol v2 infer URL.")


class ModelServiceStatus(StatusModel):
    """The observed state of a ModelService."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=CONDITIONS_LIST,
        description="Conditions (Ready, ModelLoaded, Canary...).",
    )
    observed_generation: int | None = Field(None, description="The `metadata.generation` last acted on.")
    url: str | None = Field(None, description="Base URL of the inference endpoints (the serve Service).")
    endpoints: ServiceEndpoints | None = Field(None, description="The v1 and v2 inference URLs.")
    replicas: int | None = Field(None, description="Replicas the service runs now (for the scale subresource).")
    ready_replicas: int | None = Field(None, description="Replicas ready to answer.")
    selector: str | None = Field(None, description="Label selector of the serving pods (for the scale subresource).")
    model: ServedModel | None = Field(None, description="The primary model being served.")
    canary: CanaryStatus | None = Field(None, description="The canary, while one runs.")
    promoted: PromotedModel | None = Field(
        None,
        description="A canary promoted to primary: served instead of `spec.model` while `spec.canary` names it "
        "(set `spec.model` to it and remove `spec.canary` to make that permanent), or the version of the "
        "TrainingJob last promoted under `fromTrainingJob.rollout: canary`.",
    )
    ray_service_name: str | None = Field(None, description="Name of the RayService.")


class ModelService(Resource):
    """A trained model served with Ray Serve: KServe v1 and Open Inference Protocol v2, batching, canaries."""

    KIND: ClassVar[str] = "ModelService"
    PLURAL: ClassVar[str] = "modelservices"
    #: Rules on the whole object: KubeRay derives the Services and clusters of a RayService from its name.
    MAX_NAME: ClassVar[int] = MAX_MODELSERVICE_NAME
    ROOT_CEL: ClassVar[list[dict[str, str]]] = name_rules(MAX_NAME, MODELSERVICE_NAME_LIMIT)
    SHORT_NAMES: ClassVar[list[str]] = ["ms"]

    api_version: Literal["trainserve.io/v1alpha1"] = Field("trainserve.io/v1alpha1", alias="apiVersion")
    kind: Literal["ModelService"] = "ModelService"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ModelServiceSpec
    status: ModelServiceStatus | None = None
