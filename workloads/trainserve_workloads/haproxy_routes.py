"""Whether the local HAProxy routes a service's protocols to its replicas yet.

Serve reports an application RUNNING before its HAProxy has the replicas as servers; until then requests go to
Serve's fallback proxy, which answers gRPC errors with the wrong status code. ``local serve`` returns only once
HAProxy's own stats page lists an UP replica for each protocol (``ray/serve/_private/haproxy.py`` names a backend
``<protocol>-<application>`` and marks the fallback server as a backup).
"""

from __future__ import annotations

import csv
import io
import re
import time
import urllib.request
from collections.abc import Iterable

STATS_PATH = "/stats;csv"


def backend_name(protocol: str, application: str) -> str:
    """HAProxy's backend for one application and protocol, spelled as Serve spells it."""
    name = f"{protocol.lower()}-{application}".replace("#", "-").replace("/", ".")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def routed_backends(stats_csv: str) -> set[str]:
    """The backends with at least one primary (not backup) server UP, from HAProxy's CSV stats."""
    rows = csv.DictReader(io.StringIO(stats_csv.removeprefix("# ")))
    return {
        row["pxname"]
        for row in rows
        if row.get("svname") not in ("FRONTEND", "BACKEND")
        and row.get("bck") == "0"
        and (row.get("status") or "").startswith("UP")
    }


def wait_until_routed(stats_port: int, application: str, protocols: Iterable[str], timeout_s: float = 60) -> None:
    """Return once HAProxy routes every protocol of ``application`` to a replica; TimeoutError after ``timeout_s``
    (naming the backends that have none, or saying that the stats page did not answer)."""
    wanted = {backend_name(protocol, application) for protocol in protocols}
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{stats_port}{STATS_PATH}"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                seen: set[str] | None = routed_backends(answer.read().decode())
        except OSError:
            seen = None  # HAProxy (re)starting
        if seen is not None and wanted <= seen:
            return
        if time.monotonic() > deadline:
            if seen is None:
                raise TimeoutError(f"HAProxy's stats page {url} did not answer in {timeout_s:.0f}s")
            missing = ", ".join(sorted(wanted - seen))
            raise TimeoutError(f"HAProxy has no replica UP for {missing} after {timeout_s:.0f}s")
        time.sleep(0.1)
