"""`spec.podTemplate`: what it adds to every Ray pod of both kinds, what it may not touch (refused with the field
path by the models and by the CRD alike), and that Kubernetes' own schemas validate it in the CRD and in
`trainserve validate`."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.support.documents import REPO, changed, example, full_pod_template, our_crd
from tests.support.schemas import kuberay_schema, schema_errors, version_schema
from trainserve.api.k8s import kubernetes_version, schema_problems
from trainserve.api.modelservice import ModelService
from trainserve.api.podtemplate import MODELSERVICE_ENV, TRAININGJOB_ENV
from trainserve.api.serving import ModelTarget, serve_args
from trainserve.api.trainingjob import TrainingJob, TrainingJobSpec
from trainserve.api.validation import validate_document
from trainserve.builders.common import pod_security
from trainserve.builders.rayjob import build_rayjob, resolved_config, section_hashes
from trainserve.builders.raypod import merged
from trainserve.builders.rayservice import build_rayservice
from trainserve.builders.rbac import build_status_access
from trainserve.settings import OperatorSettings

SETTINGS = OperatorSettings(image="example.com/workloads:1")
MODEL = ModelTarget(uri="s3://models/digits/3", version=3)
EXAMPLES = {"TrainingJob": "digits-gpu-trainingjob", "ModelService": "digits-gpu-modelservice"}
PLURALS = {"TrainingJob": "trainingjobs", "ModelService": "modelservices"}
KINDS = list(EXAMPLES)

Doc = dict[str, Any]


def document(kind: str, template: Doc | None = None) -> Doc:
    return changed(example(EXAMPLES[kind]), "spec.podTemplate", full_pod_template() if template is None else template)


def crd_errors(doc: Doc) -> list[str]:
    return schema_errors(doc, version_schema(our_crd(PLURALS[doc["kind"]]), "v1alpha1"))


def built(doc: Doc) -> Doc:
    """The RayJob or RayService the operator writes for ``doc``."""
    if doc["kind"] == "TrainingJob":
        job = TrainingJob.model_validate(doc)
        job.metadata.namespace, job.metadata.uid = "ml", "uid-1"
        return build_rayjob(job, SETTINGS)
    service = ModelService.model_validate(doc)
    service.metadata.namespace, service.metadata.uid = "ml", "uid-9"
    return build_rayservice(service, serve_args(service, MODEL, None), SETTINGS, "ml-models-s3")


def pods(obj: Doc) -> list[Doc]:
    cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


# --- the merge -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_lands_on_every_ray_pod_after_ours(kind: str) -> None:
    template = full_pod_template()
    ours = pods(built(example(EXAMPLES[kind])))
    for before, pod in zip(ours, pods(built(document(kind))), strict=True):
        assert pod["metadata"]["labels"] == {**template["metadata"]["labels"], **before["metadata"]["labels"]}
        assert pod["metadata"]["annotations"] == template["metadata"]["annotations"]
        spec, user = pod["spec"], template["spec"]
        assert spec["serviceAccountName"] == "my-identity" and spec["automountServiceAccountToken"] is True
        for field in ("imagePullSecrets", "priorityClassName", "runtimeClassName", "schedulerName", "affinity"):
            assert spec[field] == user[field], field
        assert spec["topologySpreadConstraints"] == user["topologySpreadConstraints"]
        assert spec["volumes"] == [*before["spec"]["volumes"], *user["volumes"]]
        assert spec["securityContext"] == before["spec"]["securityContext"] == pod_security()
        container, mine, additions = spec["containers"][0], before["spec"]["containers"][0], user["containers"][0]
        assert container["env"] == [*mine["env"], *additions["env"]]  # after ours: `$(TRAINSERVE_JOB_NAME)` works
        assert mine["envFrom"][0] == {"secretRef": {"name": "ml-models-s3"}}
        assert container["envFrom"] == [*mine["envFrom"], *additions["envFrom"]]
        assert container["volumeMounts"] == [*mine["volumeMounts"], *additions["volumeMounts"]]
        assert container["securityContext"] == mine["securityContext"]
        assert container["resources"] == mine["resources"] and container["name"] == mine["name"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_template_changes_nothing(kind: str) -> None:
    """Nothing but a TrainingJob's digest of its (immutable) podTemplate."""

    def without_digest(obj: Doc) -> Doc:
        obj["metadata"].pop("annotations", None)
        return obj

    plain = without_digest(built(example(EXAMPLES[kind])))
    assert without_digest(built(document(kind, {}))) == plain
    empty_lists = {"metadata": {"labels": {}}, "spec": {"volumes": [], "containers": [{"name": "ray", "env": []}]}}
    assert without_digest(built(document(kind, empty_lists))) == plain


@pytest.mark.parametrize("kind", KINDS)
def test_a_repeat_of_our_env_from_is_left_out(kind: str) -> None:
    template = {"spec": {"containers": [{"name": "ray", "envFrom": [{"secretRef": {"name": "ml-models-s3"}}]}]}}
    for pod, before in zip(pods(built(document(kind, template))), pods(built(example(EXAMPLES[kind]))), strict=True):
        assert pod["spec"]["containers"][0]["envFrom"] == before["spec"]["containers"][0]["envFrom"]


def test_the_service_account_replaces_the_jobs_own_on_the_head_and_gets_the_status_role() -> None:
    head, worker = pods(built(document("TrainingJob")))
    assert head["spec"]["serviceAccountName"] == worker["spec"]["serviceAccountName"] == "my-identity"
    job = TrainingJob.model_validate(document("TrainingJob"))
    job.metadata.namespace = "ml"
    access = build_status_access(job)
    assert [o["kind"] for o in access] == ["Role", "RoleBinding"]  # no ServiceAccount of our own
    assert access[1]["subjects"] == [{"kind": "ServiceAccount", "name": "my-identity", "namespace": "ml"}]
    own = build_status_access(TrainingJob.model_validate(example("digits-gpu-trainingjob")))
    assert [o["kind"] for o in own] == ["ServiceAccount", "Role", "RoleBinding"]
    assert own[2]["subjects"][0]["name"] == own[0]["metadata"]["name"] == "digits-gpu-trainserve-status"
    for obj in access:
        kubernetes_validate.validate(obj, latest_version(), strict=True)


def test_without_a_service_account_only_the_jobs_head_has_a_token() -> None:
    template = full_pod_template()
    del template["spec"]["serviceAccountName"]
    head, worker = pods(built(document("TrainingJob", template)))
    assert head["spec"]["serviceAccountName"] == "digits-gpu-trainserve-status"
    assert head["spec"]["automountServiceAccountToken"] is True
    assert "serviceAccountName" not in worker["spec"] and worker["spec"]["automountServiceAccountToken"] is False
    for pod in pods(built(document("ModelService", template))):
        assert "serviceAccountName" not in pod["spec"] and pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("kind", KINDS)
def test_with_every_field_the_objects_are_valid_for_kuberay_and_kubernetes(kind: str) -> None:
    obj = built(document(kind))
    assert schema_errors(obj, kuberay_schema("RayJob" if kind == "TrainingJob" else "RayService")) == []
    for template in pods(obj):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template["metadata"]}, **template}
        kubernetes_validate.validate(pod, latest_version(), strict=True)


def test_the_reserved_environment_names_cover_every_one_the_builders_set() -> None:
    job_env = {
        e["name"] for pod in pods(built(example("digits-gpu-trainingjob"))) for e in pod["spec"]["containers"][0]["env"]
    }
    assert job_env <= set(TRAININGJOB_ENV)
    service = changed(example("digits-gpu-modelservice"), "spec.auth", {"tokenSecretRef": {"name": "tok"}})
    parsed = ModelService.model_validate(service)
    rayservice = build_rayservice(parsed, serve_args(parsed, MODEL, None), OperatorSettings(fast_ingress=True))
    service_env = {e["name"] for pod in pods(rayservice) for e in pod["spec"]["containers"][0]["env"]}
    assert "TRAINSERVE_AUTH_TOKEN" in service_env and service_env <= set(MODELSERVICE_ENV)


def test_the_builder_never_lets_a_user_entry_replace_one_of_ours() -> None:
    with pytest.raises(ValueError, match="'dshm' is trainserve's"):
        merged([{"name": "dshm"}], [{"name": "data"}, {"name": "dshm"}], "name", "volumes")


# --- what the template may not touch, refused by the model and the CRD alike ---------------------------------

ENV = "spec.podTemplate.spec.containers[0].env"
MOUNTS = "spec.podTemplate.spec.containers[0].volumeMounts"


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def edit(template: Doc) -> None:
        node: Any = template
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _key(field: str, key: str, value: str) -> Callable[[Doc], None]:
    def edit(template: Doc) -> None:
        template["metadata"][field][key] = value

    return edit


def _append(path: str, value: Any) -> Callable[[Doc], None]:
    def edit(template: Doc) -> None:
        node: Any = template
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        node.append(value)

    return edit


#: (what is changed, the path `trainserve validate` names, its message, the CRD's message).
CONFLICTS: dict[str, tuple[Callable[[Doc], None], str, str, str]] = {
    "our label": (
        _key("labels", "trainserve.io/trainingjob", "x"),
        "spec.podTemplate.metadata.labels[trainserve.io/trainingjob]",
        "'trainserve.io/trainingjob' is set by trainserve or KubeRay on every Ray pod; choose another key",
        "labels under trainserve.io/ and ray.io/",
    ),
    "KubeRay's label": (
        _key("labels", "ray.io/node-type", "head"),
        "spec.podTemplate.metadata.labels[ray.io/node-type]",
        "set by trainserve or KubeRay",
        "labels under trainserve.io/ and ray.io/",
    ),
    "managed-by": (
        _key("labels", "app.kubernetes.io/managed-by", "me"),
        "spec.podTemplate.metadata.labels[app.kubernetes.io/managed-by]",
        "set by trainserve or KubeRay",
        "app.kubernetes.io/managed-by, are set by trainserve",
    ),
    "our annotation": (
        _key("annotations", "trainserve.io/spec-hash", "x"),
        "spec.podTemplate.metadata.annotations[trainserve.io/spec-hash]",
        "set by trainserve or KubeRay",
        "annotations under trainserve.io/ and ray.io/",
    ),
    "volume dshm": (
        _set("spec.volumes.1.name", "dshm"),
        "spec.podTemplate.spec.volumes[1].name",
        "'dshm' is used by trainserve for /dev/shm; choose another name",
        "volume name 'dshm' is used by trainserve for /dev/shm",
    ),
    "mount at /dev/shm": (
        _set("spec.containers.0.volumeMounts.1.mountPath", "/dev/shm"),
        f"{MOUNTS}[1].mountPath",
        "'/dev/shm' is trainserve's in-memory volume ('dshm'); choose another path",
        "mountPath /dev/shm is trainserve's",
    ),
    "mount at /dev/shm/": (
        _set("spec.containers.0.volumeMounts.1.mountPath", "/dev/shm/"),
        f"{MOUNTS}[1].mountPath",
        "trainserve's in-memory volume",
        "mountPath /dev/shm is trainserve's",
    ),
    "mount of dshm": (
        _set("spec.containers.0.volumeMounts.2.name", "dshm"),
        f"{MOUNTS}[2].name",
        "'dshm' is trainserve's own volume (/dev/shm)",
        "each volumeMounts[].name must name a volume of spec.volumes",
    ),
    "mount of no volume": (
        _set("spec.containers.0.volumeMounts.0.name", "datasetz"),
        f"{MOUNTS}[0].name",
        "'datasetz' names no volume of spec.podTemplate.spec.volumes",
        "each volumeMounts[].name must name a volume of spec.volumes",
    ),
    "our env name": (
        _append("spec.containers.0.env", {"name": "PYTHONUNBUFFERED", "value": "0"}),
        f"{ENV}[3].name",
        "'PYTHONUNBUFFERED' is set by trainserve",
        "podTemplate env names trainserve sets",
    ),
    "another container": (
        _set("spec.containers.0.name", "sidecar"),
        "spec.podTemplate.spec.containers[0].name",
        "unknown value 'sidecar'",
        "is not one of ['ray']",
    ),
    "two containers": (
        _append("spec.containers", {"name": "ray"}),
        "spec.podTemplate.spec.containers",
        "at most 1 item",
        "is too long",
    ),
    "a security context": (
        _set("spec.securityContext", {"privileged": True}),
        "spec.podTemplate.spec.securityContext",
        "unknown field `securityContext`",
        "securityContext: unknown field",
    ),
    "two volumes of one name": (
        _set("spec.volumes.1.name", "datasets"),
        "spec.podTemplate.spec.volumes[1]",
        "duplicates entry [0] (name 'datasets')",
        "duplicate entries with {'name': 'datasets'}",
    ),
    "a string for a list deep inside": (
        _set("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms", "zone-a"),
        "spec.podTemplate.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        "'zone-a' is a string, not a list",
        "nodeSelectorTerms: 'zone-a' is not of type 'array'",
    ),
    "a fraction for an int-or-string": (
        _set("spec.volumes.1.emptyDir.sizeLimit", 0.5),
        "spec.podTemplate.spec.volumes[1].emptyDir.sizeLimit",
        "0.5 is a number",
        "sizeLimit: 0.5 is not valid",
    ),
    "an unknown field deep inside": (
        _set("spec.volumes.0.persistentVolumeClaim.claimNme", "x"),
        "spec.podTemplate.spec.volumes[0].persistentVolumeClaim.claimNme",
        "unknown field `claimNme`",
        "claimNme: unknown field",
    ),
    "a required field missing deep inside": (
        lambda t: t["spec"]["topologySpreadConstraints"][0].pop("maxSkew"),
        "spec.podTemplate.spec.topologySpreadConstraints[0].maxSkew",
        "required field is missing",
        "'maxSkew' is a required property",
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CONFLICTS))
def test_what_the_template_may_not_touch_is_refused_with_its_path(kind: str, case: str) -> None:
    edit, path, message, crd_message = CONFLICTS[case]
    template = full_pod_template()
    edit(template)
    doc = document(kind, template)
    problems = validate_document(doc)
    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message and problems[0].fix
    errors = crd_errors(doc)
    assert any(crd_message in e for e in errors), errors


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("TrainingJob", "TF_USE_LEGACY_KERAS"),
        ("TrainingJob", "TRAINSERVE_JOB_NAME"),
        ("ModelService", "RAY_SERVE_THROUGHPUT_OPTIMIZED"),
        ("ModelService", "TRAINSERVE_AUTH_TOKEN"),
    ],
)
def test_each_kind_refuses_the_environment_names_it_sets(kind: str, name: str) -> None:
    template = full_pod_template()
    template["spec"]["containers"][0]["env"].insert(0, {"name": name, "value": "x"})
    problems = validate_document(document(kind, template))
    assert [p.path for p in problems] == [f"{ENV}[0].name"]
    assert problems[0].message.startswith(f"{name!r} is set by trainserve (")
    assert any("env names trainserve sets" in e for e in crd_errors(document(kind, template)))


def test_names_only_the_other_kind_sets_are_allowed() -> None:
    for kind, name in (("TrainingJob", "TF_CPP_MIN_LOG_LEVEL"), ("ModelService", "TF_USE_LEGACY_KERAS")):
        template = full_pod_template()
        template["spec"]["containers"][0]["env"].append({"name": name, "value": "1"})
        assert validate_document(document(kind, template)) == []
        assert crd_errors(document(kind, template)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_crd_and_the_model_accept_every_field(kind: str) -> None:
    doc = document(kind)
    assert validate_document(doc) == []
    assert crd_errors(doc) == []


def test_the_schema_check_agrees_with_json_schema_on_kubernetes_own_fields() -> None:
    """The small validator (run time) and jsonschema (tests) read the same vendored schema alike."""
    spec = version_schema(our_crd("trainingjobs"), "v1alpha1")["properties"]["spec"]["properties"]["podTemplate"]
    good = full_pod_template()
    assert schema_problems(good, spec) == [] and schema_errors(good, spec) == []
    for case in ("a string for a list deep inside", "a fraction for an int-or-string", "two volumes of one name"):
        bad = copy.deepcopy(good)
        CONFLICTS[case][0](bad)
        assert schema_problems(bad, spec) and schema_errors(bad, spec), case


def test_trainserve_validate_refuses_a_wrong_type_deep_inside(tmp_path: Path) -> None:
    template = full_pod_template()
    CONFLICTS["a string for a list deep inside"][0](template)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document("TrainingJob", template)))
    result = subprocess.run(
        [sys.executable, "-m", "trainserve.cli", "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        "spec.podTemplate.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: "
        "'zone-a' is a string, not a list" in result.stdout
    ), result.stdout
    assert "fix: give a list" in result.stdout


# --- immutability, the workload, the vendored schemas --------------------------------------------------------


def test_a_trainingjobs_template_is_immutable_and_a_modelservices_is_not() -> None:
    rules = [
        r["rule"]
        for r in version_schema(our_crd("trainingjobs"), "v1alpha1")["properties"]["spec"]["x-kubernetes-validations"]
    ]
    assert any("self.podTemplate == oldSelf.podTemplate" in r for r in rules)
    service_rules = version_schema(our_crd("modelservices"), "v1alpha1")["properties"]["spec"][
        "x-kubernetes-validations"
    ]
    assert not any("oldSelf" in r["rule"] for r in service_rules)
    job = TrainingJob.model_validate(document("TrainingJob"))
    other = TrainingJob.model_validate(changed(document("TrainingJob"), "spec.podTemplate.metadata.labels", {"a": "b"}))
    before, after = section_hashes(job), section_hashes(other)
    assert before["podTemplate"] != after["podTemplate"]
    assert {k: v for k, v in before.items() if k != "podTemplate"} == {
        k: v for k, v in after.items() if k != "podTemplate"
    }


def test_the_workload_never_sees_the_template_and_local_runs_take_it() -> None:
    job = TrainingJob.model_validate(document("TrainingJob"))
    assert "podTemplate" not in resolved_config(job)["spec"]
    # `trainserve local train` hands the workload the whole job, which parses it with the same model.
    dumped = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert TrainingJobSpec.model_validate(dumped["spec"]).pod_template == job.spec.pod_template


def test_the_vendored_kubernetes_schemas_are_what_the_generator_writes() -> None:
    assert kubernetes_version() == "1.30.0"
    script = REPO / "deploy" / "vendor_k8s_schemas.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"volumes": [{"name": "trainserve-models", "emptyDir": {}}]}, "spec.podTemplate.spec.volumes[0].name"),
        (
            {
                "volumes": [{"name": "scratch", "emptyDir": {}}],
                "containers": [
                    {"name": "ray", "volumeMounts": [{"name": "scratch", "mountPath": "/mnt/trainserve/volumes/x"}]}
                ],
            },
            "spec.podTemplate.spec.containers[0].volumeMounts[0].mountPath",
        ),
        ({"containers": [{"name": "ray", "env": [{"name": "TRAINSERVE_VOLUMES_DIR", "value": "/x"}]}]}, "env"),
    ],
)
def test_the_claims_names_and_paths_are_trainserves(change: dict[str, Any], where: str) -> None:
    document = changed(example("digits-trainingjob"), "spec.podTemplate", {"spec": change})
    problems = validate_document(document)
    assert problems and any(where in p.path for p in problems), problems
