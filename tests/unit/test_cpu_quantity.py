"""CPUs as Kubernetes takes them (`2`, `1.5`, `"2"`, `"500m"`, `"0.25"`): parsed once, accepted by the CLI and the
CRD alike, written unchanged into pod requests, and a float for Ray."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.documents import changed, example, our_crd
from tests.support.schemas import schema_errors, version_schema
from trainserve.api.base import (
    POSITIVE_QUANTITY_PATTERN,
    QUANTITY_PATTERN,
    CpuQuantity,
    cpu_quantity,
    quantity_bytes,
    quantity_value,
)
from trainserve.api.modelservice import ModelService
from trainserve.api.serving import ModelTarget, serve_args
from trainserve.api.trainingjob import TrainingJob
from trainserve.api.validation import validate_document
from trainserve.builders.rayjob import build_rayjob, section_hashes
from trainserve.builders.rayservice import worker_shape
from trainserve.serveconfig import deployment_options
from trainserve.settings import OperatorSettings

SETTINGS = OperatorSettings(image="example.com/workloads:1")
TJ_CPUS = "spec.resources.cpusPerWorker"
MS_CPUS = "spec.resources.cpusPerReplica"

#: (as written, CPUs for Ray, the pod's quantity)
ACCEPTED: list[tuple[Any, float, str]] = [
    ("500m", 0.5, "500m"),
    ("1", 1.0, "1"),
    ("2", 2.0, "2"),
    (1.5, 1.5, "1500m"),
    ("0.25", 0.25, "0.25"),
    (2, 2.0, "2"),
    (0.1, 0.1, "100m"),
    (0.0001, 0.0001, "1m"),  # rounded up to a millicore, as Kubernetes does
    ("1.5", 1.5, "1.5"),
    ("2k", 2000.0, "2k"),
    ("007", 7.0, "007"),
    ("0.5m", 0.0005, "0.5m"),
]
REFUSED: list[Any] = [0, 0.0, -1, "0", "0m", "0.000", "-1", "+1", "1.", ".5", "1e3", " 1", "1\n", "1u", "one", ""]
REFUSED += [True, False, [], ["1"], {}, {"cpus": 1}, "1" * 65]


def crd_errors(document: dict[str, Any]) -> list[str]:
    plural = "trainingjobs" if document["kind"] == "TrainingJob" else "modelservices"
    return schema_errors(document, version_schema(our_crd(plural), "v1alpha1"))


@pytest.mark.parametrize(("written", "cpus", "quantity"), ACCEPTED, ids=[repr(a[0]) for a in ACCEPTED])
def test_accepted_quantities_are_parsed_once(written: Any, cpus: float, quantity: str) -> None:
    parsed = CpuQuantity.parse(written)
    assert parsed.cpus == pytest.approx(cpus) and parsed.quantity == quantity
    for name, path in (("digits-trainingjob", TJ_CPUS), ("digits-modelservice", MS_CPUS)):
        document = changed(example(name), path, written)
        assert validate_document(document) == [] and crd_errors(document) == []


@pytest.mark.parametrize("written", REFUSED, ids=[repr(r) for r in REFUSED])
def test_refused_quantities_are_refused_by_the_cli_and_the_crd_with_a_fix(written: Any) -> None:
    document = changed(example("digits-trainingjob"), TJ_CPUS, written)
    problems = validate_document(document)
    assert [p.path for p in problems] == [TJ_CPUS], problems
    assert "500m" in problems[0].fix
    assert crd_errors(document) != []


def test_the_wire_form_is_what_the_user_wrote() -> None:
    for written, expected in (("500m", "500m"), ("2", "2"), (1.5, 1.5), (2, 2.0)):
        job = TrainingJob.model_validate(changed(example("digits-trainingjob"), TJ_CPUS, written))
        assert job.to_wire()["spec"]["resources"]["cpusPerWorker"] == expected
        assert TrainingJob.model_validate(job.to_wire()) == job


def test_a_number_reads_back_as_before_so_running_jobs_see_no_change() -> None:
    """A number is kept as a float, as when the field was a float: the digests of the immutable sections stored on
    running jobs' RayJobs still match after an upgrade."""
    job = TrainingJob.model_validate(example("digits-trainingjob"))  # cpusPerWorker: 1
    assert job.spec.resources.model_dump(mode="json", by_alias=True)["cpusPerWorker"] == 1.0
    assert section_hashes(job)["resources"] == "8cc5c67a1907"  # computed before strings were allowed


@pytest.mark.parametrize(
    ("written", "request_", "ray_cpus"), [("500m", "500m", "1"), ("2", "2", "2"), (1.5, "1500m", "2")]
)
def test_worker_pods_request_the_quantity_as_written(written: Any, request_: str, ray_cpus: str) -> None:
    document = changed(example("digits-trainingjob"), TJ_CPUS, written)
    parsed = TrainingJob.model_validate(document)
    parsed.metadata.namespace, parsed.metadata.uid = "ml", "uid-1"
    group = build_rayjob(parsed, SETTINGS)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == request_
    assert group["rayStartParams"]["num-cpus"] == ray_cpus  # whole CPUs for Ray's node


@pytest.mark.parametrize(("written", "per_pod", "pod_cpus"), [("250m", 4, 1), ("0.5", 2, 1), ("1500m", 1, 2)])
def test_serving_replicas_get_the_exact_amount_and_pods_whole_cpus(written: Any, per_pod: int, pod_cpus: int) -> None:
    service = ModelService.model_validate(changed(example("digits-modelservice"), MS_CPUS, written))
    args = serve_args(service, ModelTarget(uri="s3://m/1", version=1), None)
    assert deployment_options(args)["ray_actor_options"]["num_cpus"] == CpuQuantity.parse(written).cpus
    shape = worker_shape(args)
    assert (shape.replicas_per_pod, shape.cpus) == (per_pod, pod_cpus)


def test_quantities() -> None:
    assert quantity_value("500m") == 0.5 and quantity_value("2Gi") == 2 * 2**30 and quantity_bytes("2Gi") == 2**31
    assert cpu_quantity(2.0) == "2" and cpu_quantity(0.5) == "500m" and cpu_quantity(0.3) == "300m"
    with pytest.raises(ValueError):
        quantity_value("2Gi\n")


@given(st.text(alphabet="0123456789.mkKMGTPEi \n-+e", max_size=12))
def test_the_crd_pattern_is_a_quantity_above_zero(text: str) -> None:
    """The CRD's pattern for CPU strings accepts exactly the quantities the parser reads as more than 0."""
    in_crd = re.search(POSITIVE_QUANTITY_PATTERN.replace("$", r"\Z"), text) is not None
    parsed = re.search(QUANTITY_PATTERN.replace("$", r"\Z"), text) is not None and quantity_value(text) > 0
    assert in_crd == parsed
