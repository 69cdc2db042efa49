"""`spec.podTemplate`: what a platform adds to every Ray pod of a TrainingJob or ModelService.

The shape is a partial Kubernetes ``PodTemplateSpec`` (``metadata`` and ``spec``), so it reads like the pod
templates KubeRay users write; the Ray container's additions are one ``containers`` entry named ``ray``, as in
Kubeflow Trainer's pod template overrides. Only fields that add to the pod are offered: no ``securityContext``,
``resources``, ``image`` or ``command`` (trainserve sets those, and the restricted security always holds).
Every list and object field carries Kubernetes' own schema (:mod:`trainserve.api.k8s`), so the CRD validates
it as the API server validates a pod.

How the template merges with what trainserve writes is one function (``builders.raypod.apply_pod_template``);
the rules that keep that merge free of silent overrides are here, written twice as usual: as pydantic
validators (`trainserve validate`, the operator's ``Valid``/``Ready`` conditions) and as CEL rules in the CRD.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from trainserve.api.storage import CLUSTER_VOLUMES_DIR, VOLUMES_DIR_ENV

from .base import (
    MAX_OBJECT_NAME,
    MAX_PLACEMENT_ENTRIES,
    OBJECT_NAME_PATTERN,
    ApiModel,
    LabelKey,
    LabelValue,
    rule_error,
    section,
)
from .k8s import KubernetesSchema

#: The in-memory volume at ``/dev/shm`` on every Ray pod (Ray's object store and TensorFlow's collectives).
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"
#: Volumes trainserve adds for ``pvc://`` claims are named ``trainserve-<claim>`` and mounted under
#: ``CLUSTER_VOLUMES_DIR``: both are reserved, so a template never collides with them.
OWN_VOLUME_PREFIX = "trainserve-"
#: The Ray container of every pod, as ``spec.podTemplate.spec.containers[].name`` names it.
RAY_CONTAINER = "ray"

#: Label and annotation keys trainserve and KubeRay set on Ray pods (selectors, ownership, Ray's node identity).
RESERVED_KEY = "app.kubernetes.io/managed-by"
RESERVED_PREFIXES = ("trainserve.io/", "ray.io/")

#: What KubeRay sets on every Ray container for Ray token authentication (``authOptions``); a user's entry would
#: replace it (KubeRay keeps a variable that is already there), choosing the token or turning authentication off.
RAY_AUTH_ENV: dict[str, str] = {
    name: "Ray token authentication, set by KubeRay (operator setting `ray_auth`)"
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
}
#: Environment variables trainserve (or KubeRay, for it) sets on the Ray container, by kind, and what for. The
#: builders set only these (a test checks it), so a user's variable never silently replaces one of ours.
TRAININGJOB_ENV: dict[str, str] = {
    **RAY_AUTH_ENV,
    "TRAINSERVE_JOB_NAME": "the job's name, for the progress channel",
    "TRAINSERVE_JOB_NAMESPACE": "the job's namespace, for the progress channel",
    "TRAINSERVE_ATTEMPT": "the attempt number, for the run's tracking tags",
    "TRAINSERVE_JOB_UID": "the job's uid, for the run's tracking tags",
    "TF_USE_LEGACY_KERAS": "the workload trains with legacy Keras (tf_keras)",
    "PYTHONUNBUFFERED": "the workload's logs reach `kubectl logs` at once",
    VOLUMES_DIR_ENV: "where the `pvc://` claims are mounted",
}
MODELSERVICE_ENV: dict[str, str] = {
    **RAY_AUTH_ENV,
    VOLUMES_DIR_ENV: "where the `pvc://` claims are mounted",
    "PYTHONUNBUFFERED": "the workload's logs reach `kubectl logs` at once",
    "TF_CPP_MIN_LOG_LEVEL": "TensorFlow's C++ logs stay quiet",
    "TRAINSERVE_AUTH_TOKEN": "the bearer token of `spec.auth`",
    **{
        name: "the fast ingress path of Ray Serve (operator setting `fast_ingress`)"
        for name in (
            "RAY_SERVE_THROUGHPUT_OPTIMIZED",
            "RAY_SERVE_ENABLE_HA_PROXY",
            "RAY_SERVE_HAPROXY_METRICS_ENABLED",
            "RAY_SERVE_HAPROXY_NBTHREAD",
            "RAY_SERVE_HAPROXY_LOG_TARGET",
            "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH",
        )
    },
}

#: Entries of each list, label and annotation map of the template: far more than a pod needs, and bounds for
#: the CEL rules that read them.
MAX_TEMPLATE_ENTRIES = MAX_PLACEMENT_ENTRIES
#: Environment variables added to the Ray container.
MAX_TEMPLATE_ENV = 256
#: An annotation value: Kubernetes allows 256 KiB for all annotations of an object together.
MAX_ANNOTATION_VALUE = 256 * 1024
#: A volume's name is a DNS-1123 label (Kubernetes refuses a pod with a longer one).
MAX_VOLUME_NAME = 63

AnnotationValue = Annotated[str, Field(max_length=MAX_ANNOTATION_VALUE)]
ObjectName = Annotated[str, Field(pattern=OBJECT_NAME_PATTERN, max_length=MAX_OBJECT_NAME)]
KubernetesList = list[dict[str, Any]]


def reserved_key(key: str) -> bool:
    """Whether a label or annotation key belongs to trainserve or KubeRay."""
    return key == RESERVED_KEY or key.startswith(RESERVED_PREFIXES)


def _reserved_keys_rule(field: str) -> dict[str, str]:
    prefixes = " && ".join(f"!k.startsWith('{p}')" for p in RESERVED_PREFIXES)
    return {
        "rule": f"!has(self.{field}) || self.{field}.all(k, k != '{RESERVED_KEY}' && {prefixes})",
        "message": f"{field} under {' and '.join(RESERVED_PREFIXES)}, and {RESERVED_KEY}, are set by trainserve "
        "and KubeRay; choose other keys",
    }


class PodTemplateMetadata(ApiModel):
    """Labels and annotations added to every Ray pod."""

    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_TEMPLATE_ENTRIES,
        description="Labels added to every Ray pod (head and workers). Keys under `trainserve.io/` and `ray.io/`, "
        "and `app.kubernetes.io/managed-by`, are trainserve's and KubeRay's: using one is an error.",
    )
    annotations: dict[LabelKey, AnnotationValue] = Field(
        default_factory=dict,
        max_length=MAX_TEMPLATE_ENTRIES,
        description="Annotations added to every Ray pod, e.g. for a sidecar injector. Keys under `trainserve.io/` "
        "and `ray.io/`, and `app.kubernetes.io/managed-by`, are trainserve's and KubeRay's: using one is an error.",
    )

    CEL: ClassVar[list[dict[str, str]]] = [_reserved_keys_rule("labels"), _reserved_keys_rule("annotations")]

    @model_validator(mode="after")
    def _own_keys_only(self) -> PodTemplateMetadata:
        for field, keys in (("labels", self.labels), ("annotations", self.annotations)):
            for key in keys:
                if reserved_key(key):
                    raise rule_error(
                        f"{key!r} is set by trainserve or KubeRay on every Ray pod; choose another key",
                        f"rename it: keys under {' and '.join(RESERVED_PREFIXES)}, and {RESERVED_KEY}, are reserved",
                        at=f".{field}[{key}]",
                    )
        return self


class RayContainer(ApiModel):
    """Additions to the Ray container of every pod (the head's `ray-head` and the workers' `ray-worker`)."""

    name: Literal["ray"] = Field(
        description="`ray`: the Ray container of every pod (the head's `ray-head` and the workers' `ray-worker`)."
    )
    env: Annotated[KubernetesList, KubernetesSchema("Container.env", max_items=MAX_TEMPLATE_ENV)] = Field(
        default_factory=list,
        description="Environment variables added after trainserve's own (so they may refer to them as `$(NAME)`). "
        "A name trainserve sets is an error: on a TrainingJob `TRAINSERVE_JOB_NAME`, `TRAINSERVE_JOB_NAMESPACE`, "
        "`TF_USE_LEGACY_KERAS`, `PYTHONUNBUFFERED`; on a ModelService `PYTHONUNBUFFERED`, `TF_CPP_MIN_LOG_LEVEL`, "
        "`TRAINSERVE_AUTH_TOKEN` and the `RAY_SERVE_*` variables of the fast ingress path.",
    )
    env_from: Annotated[KubernetesList, KubernetesSchema("Container.envFrom", max_items=MAX_TEMPLATE_ENTRIES)] = Field(
        default_factory=list,
        description="Secrets and ConfigMaps whose keys become environment variables, after `storageSecretRef`'s; "
        "variables set in `env` (trainserve's or yours) take precedence over these, as in any pod.",
    )
    volume_mounts: Annotated[
        KubernetesList,
        KubernetesSchema(
            "Container.volumeMounts", max_items=MAX_TEMPLATE_ENTRIES, item_bounds=(("name", MAX_VOLUME_NAME),)
        ),
    ] = Field(
        default_factory=list,
        description=f"Mounts of `spec.volumes` into the Ray container, added to trainserve's `{SHM_PATH}`; "
        f"each names a volume of `spec.volumes`, and `{SHM_PATH}` is trainserve's.",
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": f"!has(self.volumeMounts) || self.volumeMounts.all(m, m.mountPath != '{SHM_PATH}' && "
            f"m.mountPath != '{SHM_PATH}/')",
            "message": f"mountPath {SHM_PATH} is trainserve's in-memory volume ({SHM_VOLUME}); choose another path",
        },
        {
            "rule": f"!has(self.volumeMounts) || self.volumeMounts.all(m, !m.mountPath.startsWith('{CLUSTER_VOLUMES_DIR}'))",
            "message": f"mount paths under {CLUSTER_VOLUMES_DIR} are where trainserve mounts pvc:// claims; choose another path",
        },
    ]

    @model_validator(mode="after")
    def _own_mounts_only(self) -> RayContainer:
        for index, mount in enumerate(self.volume_mounts):
            path = str(mount.get("mountPath", ""))
            if path.rstrip("/") == SHM_PATH:
                raise rule_error(
                    f"{SHM_PATH!r} is trainserve's in-memory volume ({SHM_VOLUME!r}); choose another path",
                    "mount your volume elsewhere (every Ray pod already has /dev/shm in memory)",
                    at=f".volumeMounts[{index}].mountPath",
                )
            if path.startswith(CLUSTER_VOLUMES_DIR):
                raise rule_error(
                    f"{path!r} is under {CLUSTER_VOLUMES_DIR}, where trainserve mounts pvc:// claims",
                    "mount your volume elsewhere, or name the claim in a pvc://CLAIM/PATH location instead",
                    at=f".volumeMounts[{index}].mountPath",
                )
        return self


class PodSpecAdditions(ApiModel):
    """Pod fields added to every Ray pod; each list merges with trainserve's by name."""

    service_account_name: ObjectName | None = Field(
        None,
        description="ServiceAccount of every Ray pod (e.g. one with cloud workload identity for S3 access without "
        "static keys); the pods then mount its token. A TrainingJob's head pod uses it to report progress: trainserve "
        "binds the job's status Role to it instead of creating an account of its own.",
    )
    image_pull_secrets: Annotated[
        KubernetesList, KubernetesSchema("PodSpec.imagePullSecrets", max_items=MAX_TEMPLATE_ENTRIES)
    ] = Field(default_factory=list, description="Secrets for pulling the workload image from a private registry.")
    priority_class_name: ObjectName | None = Field(None, description="PriorityClass of every Ray pod.")
    affinity: Annotated[dict[str, Any], KubernetesSchema("PodSpec.affinity")] | None = Field(
        None,
        description="Node and pod (anti-)affinity of every Ray pod, head included; `resources.nodeSelector` and "
        "`tolerations` still apply to the workers.",
    )
    topology_spread_constraints: Annotated[
        KubernetesList, KubernetesSchema("PodSpec.topologySpreadConstraints", max_items=MAX_TEMPLATE_ENTRIES)
    ] = Field(default_factory=list, description="How the Ray pods spread across zones or nodes.")
    runtime_class_name: ObjectName | None = Field(None, description="RuntimeClass of every Ray pod (e.g. `nvidia`).")
    scheduler_name: ObjectName | None = Field(
        None, description="Scheduler of every Ray pod; default: the cluster's default scheduler."
    )
    volumes: Annotated[
        KubernetesList,
        KubernetesSchema("PodSpec.volumes", max_items=MAX_TEMPLATE_ENTRIES, item_bounds=(("name", MAX_VOLUME_NAME),)),
    ] = Field(
        default_factory=list,
        description=f"Volumes added to every Ray pod, next to trainserve's `{SHM_VOLUME}` ({SHM_PATH}), whose name "
        "is therefore taken; mount them with `containers[0].volumeMounts`.",
    )
    containers: list[RayContainer] = Field(
        default_factory=list,
        max_length=1,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="At most one entry, named `ray`: environment and mounts added to the Ray container of every pod.",
    )

    CEL: ClassVar[list[dict[str, str]]] = [
        {
            "rule": f"!has(self.volumes) || self.volumes.all(v, v.name != '{SHM_VOLUME}')",
            "message": f"volume name '{SHM_VOLUME}' is used by trainserve for {SHM_PATH}; choose another name",
        },
        {
            "rule": f"!has(self.volumes) || self.volumes.all(v, !v.name.startsWith('{OWN_VOLUME_PREFIX}'))",
            "message": f"volume names starting with '{OWN_VOLUME_PREFIX}' are trainserve's (pvc:// claims); choose another name",
        },
        {
            "rule": "!has(self.containers) || self.containers.all(c, !has(c.volumeMounts) || c.volumeMounts.all(m, "
            "has(self.volumes) && self.volumes.exists(v, v.name == m.name)))",
            "message": "each volumeMounts[].name must name a volume of spec.volumes",
        },
    ]

    @model_validator(mode="after")
    def _volumes_are_own_and_mounted_ones_exist(self) -> PodSpecAdditions:
        names = [str(volume.get("name", "")) for volume in self.volumes]
        for index, name in enumerate(names):
            if name == SHM_VOLUME or name.startswith(OWN_VOLUME_PREFIX):
                why = f"for {SHM_PATH}" if name == SHM_VOLUME else "for pvc:// claims (names starting trainserve-)"
                raise rule_error(
                    f"{name!r} is used by trainserve {why}; choose another name",
                    "rename the volume, and the volumeMounts that name it",
                    at=f".volumes[{index}].name",
                )
        for c, container in enumerate(self.containers):
            for m, mount in enumerate(container.volume_mounts):
                name = str(mount.get("name", ""))
                if name in names:
                    continue
                if name == SHM_VOLUME:
                    message = f"{name!r} is trainserve's own volume ({SHM_PATH}); mount a volume of spec.volumes"
                    fix = "mount one of your own volumes"
                else:
                    message = f"{name!r} names no volume of spec.podTemplate.spec.volumes"
                    fix = f"add a volume named {name!r} to `volumes`, or mount one of: {', '.join(names) or '(none)'}"
                raise rule_error(message, fix, at=f".containers[{c}].volumeMounts[{m}].name")
        return self


class PodTemplate(ApiModel):
    """Added to every Ray pod (head and workers): a partial pod template."""

    metadata: PodTemplateMetadata = section(PodTemplateMetadata, "Labels and annotations of every Ray pod.")
    spec: PodSpecAdditions = section(PodSpecAdditions, "Pod fields and Ray container additions of every Ray pod.")

    def env_names(self) -> list[tuple[str, str]]:
        """``(path below podTemplate, name)`` of every environment variable the template sets."""
        return [
            (f".spec.containers[{c}].env[{e}].name", str(var.get("name", "")))
            for c, container in enumerate(self.spec.containers)
            for e, var in enumerate(container.env)
        ]


POD_TEMPLATE_DESCRIPTION = (
    "Added to every Ray pod (head and workers), as a partial pod template: `metadata.labels`/`annotations`, and in "
    "`spec` the ServiceAccount, image pull secrets, priority class, affinity, topology spread, runtime class, "
    "scheduler, volumes, and one `containers` entry named `ray` with `env`, `envFrom` and `volumeMounts` for the Ray "
    "container. Merge: labels and annotations are added; lists merge by name (`volumes`, `env`, "
    "`imagePullSecrets`; mounts by `mountPath`) and your entries come after trainserve's; a name, path or key "
    "trainserve uses (volume `dshm`, mount path `/dev/shm`, its environment variables, keys under `trainserve.io/` "
    "and `ray.io/`) is an error, never a silent override; trainserve's restricted security context always holds "
    "(the template has no `securityContext`). `serviceAccountName` applies to every pod and mounts its token."
)


def env_rule(reserved: dict[str, str]) -> dict[str, str]:
    """The CEL twin of :func:`env_conflict` for a kind's spec: no variable of ``reserved`` in the template."""
    names = ", ".join(f"'{name}'" for name in sorted(reserved))
    return {
        "rule": "!has(self.podTemplate) || !has(self.podTemplate.spec.containers) || "
        "self.podTemplate.spec.containers.all(c, !has(c.env) || "
        f"c.env.all(e, !(e.name in [{names}])))",
        "message": f"podTemplate env names trainserve sets ({', '.join(sorted(reserved))}) are not allowed; "
        "choose other names",
    }


def check_env(template: PodTemplate | None, reserved: dict[str, str]) -> None:
    """Refuses a template variable named like one trainserve sets on this kind's Ray container."""
    if template is None:
        return
    for at, name in template.env_names():
        if name in reserved:
            raise rule_error(
                f"{name!r} is set by trainserve ({reserved[name]}); choose another name",
                "rename the variable, or leave it out: trainserve sets it on every Ray container",
                at=f".podTemplate{at}",
            )
