from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp.web
import kmock
import pytest_asyncio

from tests.support.kubesim import Cluster, Emulator, register
from tests.support.servestats import FakeServeStats


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as api, kmock.Server(api):
        register(api)
        yield api


@pytest_asyncio.fixture()
async def cluster(emulator: Emulator) -> Cluster:
    return Cluster(emulator)


@pytest_asyncio.fixture()
async def stats() -> AsyncIterator[tuple[FakeServeStats, str]]:
    """A stats endpoint the operator reads canary figures from, and its URL."""
    fake = FakeServeStats()
    app = aiohttp.web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()
