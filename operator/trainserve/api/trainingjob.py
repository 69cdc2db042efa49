"""The TrainingJob resource: distributed TensorFlow/Keras training on a Ray cluster."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from trainserve.naming import MAX_TRAININGJOB_NAME, TRAININGJOB_NAME_LIMIT, name_rules

from .base import (
    CONDITIONS_LIST,
    MAX_IMAGE,
    MAX_PLACEMENT_ENTRIES,
    MAX_QUALIFIED_NAME,
    MAX_QUANTITY,
    MAX_URI,
    QUANTITY_PATTERN,
    RESOURCE_NAME_PATTERN,
    ApiModel,
    Condition,
    CpuQuantity,
    LabelKey,
    LabelValue,
    ObjectMeta,
    Resource,
    SecretRef,
    StatusModel,
    Toleration,
    cpus_field,
    exactly_one_rule,
    require_exactly_one,
    rule_error,
    section,
)
from .podtemplate import POD_TEMPLATE_DESCRIPTION, TRAININGJOB_ENV, PodTemplate, check_env, env_rule
from .runtimeenv import RuntimeEnvSpec

OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop", "adagrad", "nadam"]
LossName = Literal[
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mean_squared_error",
    "mean_absolute_error",
    "huber",
]
MetricName = Literal[
    "accuracy",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
    "sparse_top_k_categorical_accuracy",
    "mean_squared_error",
    "mean_absolute_error",
    "auc",
    "precision",
    "recall",
]
Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]

ENTRYPOINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
#: A `module:function` entrypoint: dotted module paths are far shorter in practice.
MAX_ENTRYPOINT = 256
#: A csv or parquet column name.
MAX_COLUMN_NAME = 256
#: Feature columns listed by name (leave `featureColumns` out to use every column but the label).
MAX_FEATURE_COLUMNS = 1024
#: Entries of `training.hyperparameters` (their values are free-form JSON, bounded only by the object's size).
MAX_HYPERPARAMETERS = 64


class BuiltinModel(ApiModel):
    """A model that ships with trainserve, built from the hyperparameters below."""

    name: Literal["mlp", "cnn"] = Field(
        description="`mlp`: dense layers over the feature vector. `cnn`: convolutions over rows reshaped to `inputShape`."
    )
    hidden_units: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default=[128, 64],
        min_length=1,
        max_length=16,
        description="Units of each dense hidden layer, in order (mlp: the whole network; cnn: the head after the convolutions).",
    )
    filters: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=[32, 64],
        min_length=1,
        max_length=8,
        description="Filters of each convolution block (cnn only).",
    )
    kernel_size: int = Field(3, ge=1, le=15, description="Side of the square convolution kernel (cnn only).")
    input_shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        min_length=2,
        max_length=3,
        description="Shape each feature row is reshaped to before the convolutions (cnn only), e.g. `[8, 8, 1]`; "
        "default: a square single-channel image from the feature count.",
    )
    activation: Literal["relu", "gelu", "tanh", "selu", "elu"] = Field(
        "relu", description="Activation of the hidden layers."
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout rate after each hidden layer (0 disables it).")
    normalize: bool = Field(
        True,
        description="Learn feature mean and variance from the training data and normalise inside the model, "
        "so the served model takes raw rows.",
    )


class ModelSpec(ApiModel):
    """What to train: a built-in model or your own Keras model. Exactly one of `builtin` or `entrypoint`."""

    builtin: BuiltinModel | None = Field(None, description="A built-in model (`mlp` or `cnn`).")
    entrypoint: str | None = Field(
        None,
        pattern=ENTRYPOINT_PATTERN,
        max_length=MAX_ENTRYPOINT,
        description="`module:function` importable in the workload image; it receives the training "
        "hyperparameters as keyword arguments and returns an uncompiled Keras model.",
    )

    CEL: ClassVar[list[dict[str, str]]] = [exactly_one_rule("builtin", "entrypoint")]

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSpec:
        require_exactly_one("model", builtin=self.builtin, entrypoint=self.entrypoint)
        return self


class DatasetSpec(ApiModel):
    """Where the data comes from. Exactly one of `builtin` or `uri`."""

    builtin: Literal["digits"] | None = Field(
        None, description="A dataset that ships offline: `digits` (scikit-learn's 8x8 handwritten digits, 1,797 rows)."
    )
    uri: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_URI,
        description="Location of the data: a local or PVC path, `file://...`, or `s3://bucket/key`.",
    )
    format: Literal["npz", "csv", "parquet"] | None = Field(
        None,
        description="File format, required with `uri`. `npz` holds arrays `x` (features) and `y` (labels); "
        "`csv` and `parquet` hold one row per sample.",
    )
    feature_columns: list[Annotated[str, Field(max_length=MAX_COLUMN_NAME)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_FEATURE_COLUMNS,
        description="Columns used as features (csv/parquet); default: every column but the label.",
    )
    label_column: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_COLUMN_NAME,
        description="Column holding the label (csv/parquet); default `label`.",
    )
    validation_split: float = Field(0.2, ge=0.0, lt=1.0, description="Fraction of the rows held out for validation.")
    shuffle_seed: int = Field(42, ge=0, description="Seed of the shuffle that precedes the train/validation split.")

    CEL: ClassVar[list[dict[str, str]]] = [
        exactly_one_rule("builtin", "uri"),
        {"rule": "!has(self.uri) || has(self.format)", "message": "format is required with uri (npz, csv or parquet)"},
        {"rule": "!has(self.builtin) || !has(self.format)", "message": "format applies only to uri datasets"},
        {
            "rule": "(!has(self.featureColumns) && !has(self.labelColumn)) || "
            "(has(self.format) && self.format != 'npz')",
            "message": "featureColumns and labelColumn apply only to csv and parquet datasets",
        },
    ]

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        require_exactly_one("dataset", builtin=self.builtin, uri=self.uri)
        if self.uri is not None and self.format is None:
            raise rule_error("dataset.uri needs a `format`", "add `format: npz`, `format: csv` or `format: parquet`")
        if self.builtin is not None and self.format is not None:
            raise rule_error("dataset.format applies only to `uri` datasets", "delete `format`")
        if (self.feature_columns is not None or self.label_column is not None) and self.format not in (
            "csv",
            "parquet",
        ):
            raise rule_error(
                "featureColumns and labelColumn apply only to csv and parquet datasets",
                "delete them, or store the data as csv or parquet",
            )
        return self


class OptimizerSpec(ApiModel):
    """The Keras optimizer."""

    name: OptimizerName = Field("adam", description="Optimizer name.")
    learning_rate: float = Field(0.001, gt=0.0, le=10.0, description="Learning rate.")


#: Two workers on two cores train at about twice the rate with it than with 1 (docs/performance.md, "Two workers").
MULTI_WORKER_STEPS_PER_EXECUTION = 16


class TrainingSpec(ApiModel):
    """How to train."""

    epochs: int = Field(10, ge=1, le=100000, description="Number of passes over the training data.")
    batch_size: int = Field(64, ge=1, le=1048576, description="Global batch size, split evenly across the workers.")
    optimizer: OptimizerSpec = section(OptimizerSpec, "Optimizer and learning rate.")
    loss: LossName = Field("sparse_categorical_crossentropy", description="Keras loss.")
    metrics: list[MetricName] = Field(
        default=["accuracy"], max_length=16, description="Keras metrics reported every epoch (training and validation)."
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_HYPERPARAMETERS,
        description="Free-form values passed to an `entrypoint` model function and recorded in the model card.",
    )
    seed: int | None = Field(None, ge=0, description="Seed for weight initialisation and dropout; unset: random.")
    mixed_precision: bool | None = Field(
        None,
        description="Compute in 16-bit floats, keep the weights in 32-bit: float16 with loss scaling on GPUs, "
        "bfloat16 on CPUs. Unset or false: 32-bit throughout.",
    )
    steps_per_execution: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Train steps per call into TensorFlow (Keras' `steps_per_execution`): the same updates in fewer "
        "calls, each of which several workers must synchronise. Unset: 1 with one worker, "
        f"{MULTI_WORKER_STEPS_PER_EXECUTION} with several.",
    )

    def steps_per_call(self, workers: int) -> int:
        """``steps_per_execution`` as set, or its default for this many workers."""
        if self.steps_per_execution is not None:
            return self.steps_per_execution
        return MULTI_WORKER_STEPS_PER_EXECUTION if workers > 1 else 1


class ResourcesSpec(ApiModel):
    """The Ray workers that train, and where they may run."""

    workers: int = Field(1, ge=1, le=1024, description="Number of training workers (one Ray worker pod each).")
    cpus_per_worker: CpuQuantity = cpus_field(
        "CPUs per worker, as Kubernetes takes them: a number (`2`, `1.5`) or a quantity string "
        '(`"2"`, `"500m"`, `"0.25"`), above 0. The worker pods request it as written; Ray gets the exact amount.',
    )
    memory_per_worker: str = Field(
        "2Gi",
        pattern=QUANTITY_PATTERN,
        max_length=MAX_QUANTITY,
        description="Memory per worker, as a Kubernetes quantity such as `4Gi`.",
    )
    gpus_per_worker: int = Field(0, ge=0, le=16, description="GPUs per worker; 0 trains on CPUs.")
    gpu_resource_name: str = Field(
        "nvidia.com/gpu",
        pattern=RESOURCE_NAME_PATTERN,
        max_length=MAX_QUALIFIED_NAME,
        description="Extended resource name of the GPU.",
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_PLACEMENT_ENTRIES, description="Node labels the worker pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=MAX_PLACEMENT_ENTRIES,
        description="Tolerations for the worker pods (the GPU taint's is added automatically when GPUs are requested).",
    )


class CheckpointSpec(ApiModel):
    """Where and how often to checkpoint; a new attempt resumes from the latest checkpoint."""

    uri: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_URI,
        description="Checkpoint location; default `<output.uri>/checkpoints`.",
    )
    every_epochs: int = Field(1, ge=1, description="Write a checkpoint every this many epochs.")
    keep: int = Field(3, ge=1, le=1000, description="Number of most recent checkpoints to keep.")


class OutputSpec(ApiModel):
    """Where the trained model goes."""

    uri: str = Field(
        min_length=1,
        max_length=MAX_URI,
        description="Model location (local or PVC path, `file://...`, `s3://bucket/prefix`); each run writes "
        "`<uri>/<version>/` with a SavedModel and a `model.json` model card.",
    )


class RunPolicy(ApiModel):
    """Retries, deadlines, clean-up and suspension."""

    backoff_limit: int = Field(
        3, ge=0, le=100, description="Retries after a failed attempt; each resumes from the last checkpoint."
    )
    worker_restarts: int = Field(
        0,
        ge=0,
        le=100,
        description="Restarts of a failed worker group inside the same Ray cluster (Ray Train's "
        "`FailureConfig.max_failures`), each from the last checkpoint, before the attempt fails and a retry "
        "starts a new Ray cluster. For preemptible or spot nodes.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the job when all attempts together run longer than this."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the Ray resources this long after the job finishes (the TrainingJob stays)."
    )
    suspend: bool = Field(False, description="Tear the Ray cluster down and wait; `false` resumes from the checkpoint.")


class MlflowTracking(ApiModel):
    """An MLflow tracking server the chief logs the run to."""

    tracking_uri: str = Field(
        min_length=1,
        max_length=MAX_URI,
        pattern=r"^https?://",
        description="The MLflow tracking server, `http(s)://HOST[:PORT]`.",
    )
    experiment: str = Field(
        min_length=1, max_length=500, description="Experiment the run is logged in (created if missing)."
    )
    registered_model_name: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="On success, register the SavedModel as a new version of this registered model.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        None,
        description="Secret whose keys (e.g. `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and "
        "`MLFLOW_TRACKING_PASSWORD`) become environment variables of the Ray pods.",
    )


class TrackingSpec(ApiModel):
    """Experiment tracking besides the TensorBoard event files every run writes."""

    mlflow: MlflowTracking | None = Field(None, description="Log the run (and register the model) in MLflow.")


class TrainingJobSpec(ApiModel):
    """The desired state of a TrainingJob."""

    image: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_IMAGE,
        description="Workload image for the Ray pods; default: the operator's.",
    )
    model: ModelSpec = Field(description="What to train.")
    dataset: DatasetSpec = Field(description="What to train on.")
    training: TrainingSpec = section(TrainingSpec, "How to train.")
    resources: ResourcesSpec = section(ResourcesSpec, "Workers and their resources.")
    checkpoint: CheckpointSpec = section(CheckpointSpec, "Checkpointing and resume.")
    output: OutputSpec = Field(description="Where the trained model is written.")
    storage_secret_ref: SecretRef | None = Field(
        None,
        description="Secret whose keys (e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`) "
        "become environment variables of the Ray pods for storage access.",
    )
    run_policy: RunPolicy = section(RunPolicy, "Retries, deadline, TTL and suspend.")
    pod_template: PodTemplate | None = Field(
        None, description=f"{POD_TEMPLATE_DESCRIPTION} Immutable, like a Job's pod template."
    )
    runtime_env: RuntimeEnvSpec | None = Field(
        None, description="Code, pip packages and environment variables for the driver and workers, without an image."
    )
    tracking: TrackingSpec | None = Field(None, description="Experiment tracking (MLflow), opt-in.")

    #: What a job trains on and with, and its pods, cannot change once it exists (transition rules: checked on
    #: update only; the operator also refuses such a change with a `Valid=False` condition where no CEL runs).
    CEL: ClassVar[list[dict[str, str]]] = [
        *(
            {
                "rule": f"self.{section} == oldSelf.{section}",
                "message": f"spec.{section} is immutable: delete the TrainingJob and create a new one",
            }
            for section in ("model", "dataset", "training", "resources")
        ),
        {
            "rule": "has(self.podTemplate) == has(oldSelf.podTemplate) && "
            "(!has(self.podTemplate) || self.podTemplate == oldSelf.podTemplate)",
            "message": "spec.podTemplate is immutable: delete the TrainingJob and create a new one",
        },
        env_rule(TRAININGJOB_ENV),
    ]

    @model_validator(mode="after")
    def _template_leaves_our_env_alone(self) -> TrainingJobSpec:
        check_env(self.pod_template, TRAININGJOB_ENV)
        return self

    @property
    def checkpoint_uri(self) -> str:
        """The checkpoint location, with its default filled in."""
        return self.checkpoint.uri or f"{self.output.uri.rstrip('/')}/checkpoints"


class Progress(StatusModel):
    """Training progress, updated after every epoch."""

    epoch: int | None = Field(None, description="Last completed epoch (1-based).")
    total_epochs: int | None = Field(None, description="Epochs the job will run.")
    percent: float | None = Field(None, description="Completed share of the epochs, 0-100.")
    eta_seconds: float | None = Field(None, description="Estimated seconds until training ends.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Metrics of the last epoch (e.g. loss, val_accuracy)."
    )
    updated_at: datetime | None = Field(None, description="When this progress was reported.")


class CheckpointStatus(StatusModel):
    """The latest checkpoint written."""

    uri: str | None = Field(None, description="Location of the checkpoint.")
    epoch: int | None = Field(None, description="Epoch the checkpoint was taken after.")
    time: datetime | None = Field(None, description="When it was written.")


class ModelStatus(StatusModel):
    """The model the job produced."""

    uri: str | None = Field(None, description="Location of the SavedModel version folder.")
    version: int | None = Field(None, description="Version number under `output.uri`.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final training and validation metrics.")
    dataset_uri: str | None = Field(None, description="The dataset trained on: its location, or `builtin:<name>`.")
    dataset_fingerprint: str | None = Field(None, description="SHA-256 of the data trained on (features and labels).")
    resumed_from: str | None = Field(None, description="The checkpoint this attempt resumed from, if any.")
    spec_hash: str | None = Field(
        None, description="Digest of the model, dataset and training sections (the checkpoints' fingerprint)."
    )


class MlflowRunStatus(StatusModel):
    """The MLflow run of the job (every attempt continues it)."""

    run_id: str | None = Field(None, description="The run's id.")
    experiment_id: str | None = Field(None, description="The experiment's id.")
    registered_version: str | None = Field(None, description="The registered model version, once registered.")
    error: str | None = Field(None, description="Why the server could not be used (training goes on without it).")


class TrainingJobStatus(StatusModel):
    """The observed state of a TrainingJob."""

    phase: Phase | None = Field(None, description="Pending, Running, Succeeded, Failed or Suspended.")
    conditions: list[Condition] = Field(
        default_factory=list, json_schema_extra=CONDITIONS_LIST, description="Conditions, by type."
    )
    observed_generation: int | None = Field(None, description="The `metadata.generation` last acted on.")
    start_time: datetime | None = Field(None, description="When the first attempt started.")
    completion_time: datetime | None = Field(None, description="When the job succeeded or finally failed.")
    attempts: int | None = Field(None, description="Attempts started so far (1 + retries).")
    progress: Progress | None = Field(None, description="Progress of the current attempt.")
    last_checkpoint: CheckpointStatus | None = Field(None, description="The latest checkpoint.")
    model: ModelStatus | None = Field(None, description="The trained model, once the job succeeded.")
    ray_job_name: str | None = Field(None, description="Name of the current attempt's RayJob.")
    tensorboard: str | None = Field(
        None, description="TensorBoard logdir of the job (one folder per attempt): `tensorboard --logdir` it."
    )
    mlflow: MlflowRunStatus | None = Field(None, description="The MLflow run, when `spec.tracking.mlflow` is set.")


class TrainingJob(Resource):
    """Distributed TensorFlow/Keras training on a Ray cluster, with checkpoints and automatic resume."""

    KIND: ClassVar[str] = "TrainingJob"
    PLURAL: ClassVar[str] = "trainingjobs"
    #: Rules on the whole object (CEL may read metadata.name): KubeRay allows RayJob names of 47 characters,
    #: and the operator names them `<name>-<attempt>` (attempt up to 101), all DNS-1035 labels.
    MAX_NAME: ClassVar[int] = MAX_TRAININGJOB_NAME
    ROOT_CEL: ClassVar[list[dict[str, str]]] = name_rules(MAX_NAME, TRAININGJOB_NAME_LIMIT)
    SHORT_NAMES: ClassVar[list[str]] = ["tj"]

    api_version: Literal["trainserve.io/v1alpha1"] = Field("trainserve.io/v1alpha1", alias="apiVersion")
    kind: Literal["TrainingJob"] = "TrainingJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None
