from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest_asyncio

from tests.support.kubesim import Cluster, Emulator, register


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as api, kmock.Server(api):
        register(api)
        yield api


@pytest_asyncio.fixture()
async def cluster(emulator: Emulator) -> Cluster:
    return Cluster(emulator)
