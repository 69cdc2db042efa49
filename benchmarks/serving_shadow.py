"""Serving with a shadow: the primary's latency at c=32 alone, then with a candidate scoring 100% of its requests.

The candidate is a copy of the served model published as version 2 (same weights, so the same cost per call, and
every row agrees): the figure is what shadow evaluation costs the clients of the primary. One ModelService, served
as `trainserve local serve` serves it; the shadow is switched on in place (as an edit of the resource would), so
both measurements share the replica, and the stats endpoint tells how many requests the candidate scored and
how many it dropped because it was behind.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from .harness import Wrk, progress, summarize
from .models import FEATURES as ROWS

CONNECTIONS = 32


def candidate_copy(model_dir: str, work: Path, name: str) -> str:
    """The served version folder, copied as version 2 of another output folder."""
    target = work / "shadow-candidates" / name / "2"
    shutil.copytree(model_dir, target, dirs_exist_ok=True)
    card_path = target / "model.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps(card | {"version": 2}))
    return str(target)


def shadow_spec(candidate: str) -> dict[str, Any]:
    """The ModelService's canary: ``candidate`` in shadow mode, scoring every request, judged by no one."""
    return {"canary": {"model": {"uri": candidate}, "mode": "shadow", "shadowPercent": 100}}


def shadow_counts(url: str, name: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/v2/models/{name}/stats", timeout=10) as answer:
        versions = json.load(answer)["versions"]
    return dict((versions.get("2") or {}).get("shadow") or {})


def measure_shadow(
    name: str, model_dir: str, runtime: str, repeats: int, duration: float, warmup: float, work: Path
) -> dict[str, Any]:
    """p99 (and req/s) at c=32 without a shadow, then with one at 100%; the candidate's scored and dropped counts."""
    from .serving import LocalServer, body, modelservice

    candidate = candidate_copy(model_dir, work, name)
    server = LocalServer(modelservice(name, model_dir, runtime=runtime), work)
    runs: dict[str, list[dict[str, float]]] = {"alone": [], "shadow": []}
    try:
        server.wait_ready()
        with Wrk(f"{server.url}/v1/models/{name}:predict", body(ROWS[name])) as load:
            progress(f"serving {name} at c={CONNECTIONS}: the primary alone")
            load.run(CONNECTIONS, warmup)
            runs["alone"] = [load.run(CONNECTIONS, duration) for _ in range(repeats)]
            progress(f"serving {name} at c={CONNECTIONS}: with a shadow scoring 100% of the requests")
            server.update(modelservice(name, model_dir, runtime=runtime, **shadow_spec(candidate)))
            load.run(CONNECTIONS, warmup)
            before = shadow_counts(server.url, name)
            runs["shadow"] = [load.run(CONNECTIONS, duration) for _ in range(repeats)]
            after = shadow_counts(server.url, name)
    finally:
        server.stop()
    offered = sum(int(r["requests"]) for r in runs["shadow"])
    figures: dict[str, Any] = {
        mode: {key: summarize([r[key] for r in results]) for key in ("rps", "p50", "p99", "errors")}
        for mode, results in runs.items()
    }
    figures["candidate"] = {
        "offered": offered,
        "scored": int(after.get("requests", 0)) - int(before.get("requests", 0)),
        "dropped": int(after.get("dropped", 0)) - int(before.get("dropped", 0)),
        "agreement": after.get("agreement"),
        "p99Ms": after.get("p99Ms"),
    }
    return figures


def shadow_rows(name: str, figures: dict[str, Any]) -> list[list[Any]]:
    """Rows of the serving table: the primary at c=32 alone and with the shadow."""
    alone, shadow, candidate = figures["alone"], figures["shadow"], figures["candidate"]
    scored = f"shadow scored {candidate['scored']}, dropped {candidate['dropped']}"
    return [
        [name, f"{CONNECTIONS}, no shadow", "", _cell(alone), "", ""],
        [name, f"{CONNECTIONS}, shadow 100%", "", _cell(shadow), scored, f"- / {int(shadow['errors']['max'])}"],
    ]


def _cell(summary: dict[str, Any]) -> str:
    return f"{summary['rps']['median']:.0f} / {summary['p50']['median']:.1f} / {summary['p99']['median']:.1f}"
