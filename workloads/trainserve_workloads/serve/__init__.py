"""Serving: the Ray Serve application (`trainserve_workloads.serve:app`) and its parts.

``app`` is imported on first use, so that the parts without Ray (``routes``, ``protocol``, ``batching``) import
quickly on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .loopback import narrow_replica_servers

narrow_replica_servers()  # every replica imports this package first, whichever deployment it runs

if TYPE_CHECKING:
    from .app import build_app as app

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .app import build_app

    globals()["app"] = build_app  # importing the submodule bound it under this name: the builder takes it back
    return build_app
