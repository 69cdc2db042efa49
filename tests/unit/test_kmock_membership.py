"""The emulator's dispatch (tests/support/kmock_membership.py): each request is checked against the reactions
once, not against every request before it, and reactions whose views depend on the history (slices) answer as
kmock's own code does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import kmock
import pytest
import pytest_asyncio

from tests.support.documents import example
from tests.support.kubesim import TRAININGJOBS, Emulator, register

pytestmark = pytest.mark.asyncio
JOBS = "/apis/trainserve.io/v1alpha1/namespaces/ml/trainingjobs"


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        register(emulator, kuberay=False)
        yield emulator


async def statuses(api: Emulator, method: str, path: str, times: int, body: object = None) -> list[int]:
    async with aiohttp.ClientSession() as session:
        answers = []
        for _ in range(times):
            async with session.request(method, f"{str(api.url).rstrip('/')}{path}", json=body) as response:
                answers.append(response.status)
        return answers


async def test_each_request_is_checked_once_however_many_came_before(api: Emulator) -> None:
    checked: list[str] = []

    def marks(request: kmock.Request) -> bool:
        checked.append(str(request.url))
        return request.name == "marked"

    api[marks] << 418
    assert await statuses(api, "GET", JOBS, 60) == [200] * 60
    assert await statuses(api, "GET", f"{JOBS}/marked", 1) == [418]
    # kmock alone filters the whole log for every request: 61 * 62 / 2 = 1,891 calls.
    assert len(checked) == 61


async def test_a_slice_of_a_filter_still_answers_only_its_first_requests(api: Emulator) -> None:
    api[kmock.action.LIST, kmock.resource(TRAININGJOBS)][:2] << 503
    assert await statuses(api, "GET", JOBS, 4) == [503, 503, 200, 200]


async def test_a_filter_that_does_not_match_leaves_the_request_to_the_emulator(api: Emulator) -> None:
    api[kmock.action.CREATE, kmock.resource(TRAININGJOBS)] << 409
    assert await statuses(api, "GET", JOBS, 2) == [200, 200]
    assert await statuses(api, "POST", JOBS, 1, example("digits-trainingjob")) == [409]
