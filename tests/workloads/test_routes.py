"""The route table on its own: (method, path) to endpoint, model and version, and what is refused (no Ray)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.workloads.conftest import REPO
from trainserve_workloads.serve import routes
from trainserve_workloads.serve.routes import (
    LIVE,
    NOT_FOUND,
    READY,
    RESOLVED_MAX,
    SERVER_METADATA,
    V1_MODEL,
    V1_PREDICT,
    V2_INFER,
    V2_METADATA,
    V2_MODEL_NOT_FOUND,
    V2_MODEL_READY,
    V2_STATS,
    Auth,
    Endpoint,
    Route,
    resolve,
)


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/v1/models/digits:predict", Route(V1_PREDICT, "digits")),
        ("GET", "/v1/models/digits", Route(V1_MODEL, "digits")),
        ("POST", "/v2/models/digits/infer", Route(V2_INFER, "digits")),
        ("POST", "/v2/models/digits/versions/3/infer", Route(V2_INFER, "digits", "3")),
        ("GET", "/v2/models/digits", Route(V2_METADATA, "digits")),
        ("GET", "/v2/models/digits/versions/unversioned", Route(V2_METADATA, "digits", "unversioned")),
        ("GET", "/v2/models/digits/ready", Route(V2_MODEL_READY, "digits")),
        ("GET", "/v2/models/digits/versions/2/ready", Route(V2_MODEL_READY, "digits", "2")),
        ("GET", "/v2/models/digits/stats", Route(V2_STATS, "digits")),
        ("GET", "/v2/health/live", Route(LIVE)),
        ("GET", "/v2/health/ready", Route(READY)),
        ("GET", "/v2", Route(SERVER_METADATA)),
    ],
)
def test_each_endpoint_with_its_model_and_version(method: str, path: str, route: Route) -> None:
    assert resolve(method, path) == route
    assert resolve(method, path + "/") == route  # the server strips trailing slashes; the table does not mind them


def test_health_and_server_metadata_take_any_method() -> None:
    for method in ("GET", "POST", "HEAD", "DELETE"):
        assert resolve(method, "/v2/health/live") == Route(LIVE)
        assert resolve(method, "/v2/health/ready") == Route(READY)
        assert resolve(method, "/v2") == Route(SERVER_METADATA)


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "expected"),
    [
        ("GET", "/v1/models/digits:predict", V1_PREDICT, "POST"),
        ("POST", "/v1/models/digits", V1_MODEL, "GET"),
        ("GET", "/v2/models/digits/infer", V2_INFER, "POST"),
        ("PUT", "/v2/models/digits", V2_METADATA, "GET"),
        ("POST", "/v2/models/digits/ready", V2_MODEL_READY, "GET"),
        ("POST", "/v2/models/digits/stats", V2_STATS, "GET"),
    ],
)
def test_a_wrong_method_is_a_405_that_names_the_right_one(
    method: str, path: str, endpoint: Endpoint, expected: str
) -> None:
    route = resolve(method, path)
    assert route.endpoint == endpoint and route.model == "digits"
    assert route.refusal == (405, f"use {expected} here, not {method}")


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/models/digits:explain", Route(NOT_FOUND, "digits", None, (404, "unknown verb :explain; use :predict"))),
        ("/v2/models/digits/versions", Route(NOT_FOUND, "digits", None, (404, "missing version after /versions/"))),
        (
            "/v2/models/digits/explain",
            Route(V2_MODEL_NOT_FOUND, "digits", None, (404, "no endpoint explain for model digits")),
        ),
        (
            "/v2/models/digits/versions/2/infer/more",
            Route(V2_MODEL_NOT_FOUND, "digits", "2", (404, "no endpoint infer/more for model digits")),
        ),
    ],
)
def test_paths_under_a_model_that_name_no_endpoint(path: str, route: Route) -> None:
    assert resolve("POST", path) == route


@pytest.mark.parametrize(
    "path", ["/", "/nothing/here", "/v1", "/v1/models", "/v2/models", "/v2/health", "/v2/health/dead", "/v2/x"]
)
def test_other_paths_are_404s_that_name_the_two_protocols(path: str) -> None:
    route = resolve("GET", path)
    assert route.endpoint == NOT_FOUND and route.model is None and route.version is None
    assert route.refusal is not None and route.refusal[0] == 404
    assert path in route.refusal[1] and ":predict" in route.refusal[1] and "/infer" in route.refusal[1]


def test_which_endpoints_need_the_token_and_when() -> None:
    """v1 :predict answers a wrong method before a missing token, the v2 model endpoints the other way round."""
    assert V1_PREDICT.auth is Auth.AFTER_METHOD
    assert {e.auth for e in (V2_INFER, V2_METADATA, V2_MODEL_NOT_FOUND, SERVER_METADATA)} == {Auth.BEFORE_METHOD}
    assert {e.auth for e in (LIVE, READY, V1_MODEL, V2_MODEL_READY, V2_STATS, NOT_FOUND)} == {Auth.OPEN}


@given(method=st.sampled_from(["GET", "POST", "PUT", ""]) | st.text(max_size=6), path=st.text(max_size=40))
def test_any_path_gets_a_route_and_refusals_are_404_or_405(method: str, path: str) -> None:
    route = resolve(method, "/" + path)
    assert route.refusal is None or route.refusal[0] in (404, 405)
    found = route.endpoint not in (NOT_FOUND, V2_MODEL_NOT_FOUND)
    assert (route.refusal is None) == (found and route.endpoint.method in (None, method))


def test_paths_seen_before_are_looked_up_and_still_checked_for_their_method() -> None:
    first = resolve("POST", "/v2/models/cached/infer")
    assert resolve("POST", "/v2/models/cached/infer") is first
    assert resolve("GET", "/v2/models/cached/infer").refusal == (405, "use POST here, not GET")
    assert resolve("GET", "/v2/health/live") is resolve("POST", "/v2/health/live")


def test_the_paths_kept_are_bounded() -> None:
    for index in range(RESOLVED_MAX + 10):
        assert resolve("POST", f"/v1/models/m{index}:predict") == Route(V1_PREDICT, f"m{index}")
    assert resolve("POST", "/v1/models/late:predict") == Route(V1_PREDICT, "late")
    assert len(routes._RESOLVED) == RESOLVED_MAX


def test_the_route_table_imports_without_ray() -> None:
    code = "import sys, trainserve_workloads.serve.routes; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0
