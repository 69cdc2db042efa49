"""The KubeRay probe: which ``ray.io/v1`` resources the API server serves and whether their CRDs know
``authOptions``, asked once per ``ttl``."""

from __future__ import annotations

import asyncio
import copy
import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.support.schemas import KUBERAY_CRDS, crd_from_file
from trainserve.controllers import base
from trainserve.controllers.base import CLUSTER_SPEC_FIELD, KubeRayProbe, crd_has_auth_options
from trainserve.kube import ApiError, KubeApi

TTL = 30.0
KUBERAY = {"rayclusters", "rayjobs", "rayservices"}


class Discovery:
    """Our ``KubeApi.kuberay_resources``, answering from a script and counting the calls."""

    def __init__(self, *answers: set[str] | ApiError, delay: float = 0.0):
        self.answers = list(answers)
        self.delay = delay
        self.calls = 0

    async def kuberay_resources(self) -> set[str]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, ApiError):
            raise answer
        return set(answer)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The probe's ``time.monotonic`` (only in its module: the event loop keeps the real one)."""
    fake = Clock()
    monkeypatch.setattr(base, "time", SimpleNamespace(monotonic=fake))
    return fake


def probe(discovery: Discovery) -> KubeRayProbe:
    return KubeRayProbe(cast(KubeApi, discovery), ttl=TTL)


@pytest.mark.asyncio
async def test_the_answer_is_cached_for_ttl(clock: Clock) -> None:
    discovery = Discovery(KUBERAY, set())
    kuberay = probe(discovery)
    for _ in range(5):
        assert await kuberay.installed()
        clock.now += TTL / 10
    assert discovery.calls == 1


@pytest.mark.asyncio
async def test_the_api_is_asked_again_after_ttl(clock: Clock) -> None:
    discovery = Discovery(KUBERAY, set())
    kuberay = probe(discovery)
    assert await kuberay.installed()
    clock.now += TTL + 1
    assert not await kuberay.installed()  # KubeRay was uninstalled meanwhile
    assert discovery.calls == 2


@pytest.mark.asyncio
async def test_invalidate_asks_again_at_once(clock: Clock) -> None:
    discovery = Discovery(set(), KUBERAY)
    kuberay = probe(discovery)
    assert not await kuberay.installed()
    kuberay.invalidate()  # e.g. a RayJob create failed with 404
    assert await kuberay.installed()
    assert discovery.calls == 2


@pytest.mark.asyncio
async def test_rayjobs_and_rayservices_are_told_apart_from_one_answer(clock: Clock) -> None:
    discovery = Discovery({"rayclusters", "rayjobs"})
    kuberay = probe(discovery)
    assert await kuberay.installed()  # rayjobs by default
    assert await kuberay.installed("rayjobs")
    assert not await kuberay.installed("rayservices")  # an old KubeRay, without RayService
    assert discovery.calls == 1


@pytest.mark.asyncio
async def test_kuberay_going_missing_is_logged_once(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trainserve.operator")
    discovery = Discovery(KUBERAY, set(), set(), set(), KUBERAY)
    kuberay = probe(discovery)
    for _ in range(5):
        await kuberay.installed()
        clock.now += TTL + 1
    assert discovery.calls == 5
    messages = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert messages == [
        ("INFO", "KubeRay found"),
        ("WARNING", "KubeRay is not installed"),
        ("INFO", "KubeRay found"),  # back again
    ]


@pytest.mark.asyncio
async def test_concurrent_callers_share_one_call(clock: Clock) -> None:
    discovery = Discovery(KUBERAY, delay=0.01)
    kuberay = probe(discovery)
    answers = await asyncio.gather(*(kuberay.installed(p) for p in ("rayjobs", "rayservices", "rayjobs", "x")))
    assert answers == [True, True, True, False]
    assert discovery.calls == 1


@pytest.mark.asyncio
async def test_an_api_error_propagates_and_is_not_cached(clock: Clock) -> None:
    discovery = Discovery(ApiError(403, "Forbidden", "cannot list ray.io/v1"), KUBERAY)
    kuberay = probe(discovery)
    with pytest.raises(ApiError) as raised:
        await kuberay.installed()
    assert raised.value.status == 403
    assert await kuberay.installed()  # asked again, not answered "missing" from the failure
    assert discovery.calls == 2


@pytest.mark.asyncio
async def test_an_api_error_after_ttl_propagates_and_the_next_call_asks_again(clock: Clock) -> None:
    discovery = Discovery(KUBERAY, ApiError(0, "Unreachable"), set())
    kuberay = probe(discovery)
    assert await kuberay.installed()
    clock.now += TTL + 1
    with pytest.raises(ApiError):
        await kuberay.installed()
    assert not await kuberay.installed()
    assert discovery.calls == 3


# --- authOptions: read from KubeRay's CRD -------------------------------------------------------------------------


def vendored_crd(plural: str) -> dict[str, Any]:
    """KubeRay v1.7.0's CRD of ``plural``, as the API server returns it."""
    return copy.deepcopy(crd_from_file(KUBERAY_CRDS / f"ray.io_{plural}.yaml"))


def without_auth_options(crd: dict[str, Any], plural: str) -> dict[str, Any]:
    """The same CRD as a KubeRay older than v1.5.1 installs it: no ``authOptions`` in the cluster spec."""
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        spec[CLUSTER_SPEC_FIELD[plural]]["properties"].pop("authOptions", None)
    return crd


class Crds:
    """Our ``KubeApi.get_crd``, answering from a script and counting the calls."""

    def __init__(self, *answers: dict[str, Any] | None):
        self.answers = list(answers)
        self.calls: list[str] = []

    async def get_crd(self, name: str) -> dict[str, Any] | None:
        self.calls.append(name)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.mark.parametrize("plural", ["rayjobs", "rayservices"])
def test_kuberay_v1_7_crds_have_auth_options_and_older_ones_do_not(plural: str) -> None:
    crd = vendored_crd(plural)
    assert crd_has_auth_options(crd, plural)
    assert not crd_has_auth_options(without_auth_options(crd, plural), plural)
    assert not crd_has_auth_options(None, plural)  # no CRD object at all: nothing says the field is kept


@pytest.mark.asyncio
async def test_the_crd_is_read_once_per_ttl_and_a_change_is_logged_once(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trainserve.operator")
    old, new = without_auth_options(vendored_crd("rayjobs"), "rayjobs"), vendored_crd("rayjobs")
    crds = Crds(old, old, new)
    kuberay = KubeRayProbe(cast(KubeApi, crds), ttl=TTL)
    assert not await kuberay.auth_supported("rayjobs")
    clock.now += TTL + 1
    assert not await kuberay.auth_supported("rayjobs")  # cached longer than discovery: a schema seldom changes
    clock.now += base.CRD_SCHEMA_TTL_SECONDS
    assert not await kuberay.auth_supported("rayjobs")
    kuberay.invalidate()  # the resync: KubeRay was upgraded meanwhile
    assert await kuberay.auth_supported("rayjobs")
    assert crds.calls == ["rayjobs.ray.io"] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert len(warnings) == 1 and "has no authOptions" in warnings[0]
    assert len(infos) == 1 and "token authentication" in infos[0]
