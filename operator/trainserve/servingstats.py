"""Reads a ModelService's per-version figures from its serving application (``/v2/models/NAME/stats``)."""

from __future__ import annotations

from typing import Any

import aiohttp

from trainserve.api.figures import Snapshot


class StatsUnavailable(Exception):
    """The serving application did not answer with figures."""


async def fetch_snapshot(url: str, timeout_s: float = 5.0) -> Snapshot:
    """One reading of the stats endpoint at ``url``."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise StatsUnavailable(f"{url} answered {response.status}")
            data: Any = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise StatsUnavailable(f"{url}: {type(err).__name__}: {err}") from None
    if not isinstance(data, dict):
        raise StatsUnavailable(f"{url} answered something other than a JSON object")
    return Snapshot.from_wire(data)
