"""Serving: the Ray Serve application (`trainserve_workloads.serve:app`) and its parts."""

from .app import build_app as app

__all__ = ["app"]
