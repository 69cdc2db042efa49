"""The generated CRDs are valid, explain every field, and carry what kubectl users rely on."""

from __future__ import annotations

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from tests.support.documents import our_crd
from tests.support.schemas import walk_schema

PLURALS = ["trainingjobs", "modelservices"]


@pytest.mark.parametrize("plural", PLURALS)
def test_crd_is_a_valid_apiextensions_object(plural: str) -> None:
    kubernetes_validate.validate(our_crd(plural), latest_version(), strict=True)


@pytest.mark.parametrize("plural", PLURALS)
def test_schema_is_structural_and_every_field_is_described(plural: str) -> None:
    root = our_crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk_schema(root, plural):
        assert "$ref" not in node and "anyOf" not in node, path
        typeless = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        assert "type" in node or typeless, f"{path} has no type"
        is_item = path.endswith("[]") or path.endswith("{}")
        if not is_item and path.count(".") >= 1 and not path.endswith(".metadata"):
            assert node.get("description"), f"{path} has no description (kubectl explain would be empty)"


def test_names_subresources_and_columns() -> None:
    tj = our_crd("trainingjobs")["spec"]
    ms = our_crd("modelservices")["spec"]
    assert tj["group"] == ms["group"] == "trainserve.io"
    assert tj["names"]["shortNames"] == ["tj"] and ms["names"]["shortNames"] == ["ms"]
    assert tj["names"]["categories"] == ms["names"]["categories"] == ["trainserve"]
    tj_version, ms_version = tj["versions"][0], ms["versions"][0]
    assert tj_version["subresources"] == {"status": {}}
    assert ms_version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = lambda v: [c["name"] for c in v["additionalPrinterColumns"] if not c.get("priority")]  # noqa: E731
    assert columns(tj_version) == ["Phase", "Workers", "GPUs", "Epoch", "Loss", "Age"]
    assert columns(ms_version) == ["Ready", "Replicas", "Model", "URL", "Age"]
    status = ms_version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
