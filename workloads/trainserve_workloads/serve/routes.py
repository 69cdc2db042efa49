"""Which endpoint a request is for: a pure function of its method and path (no Ray, no server state).

The server then refuses a request in this order: a model other than the one served (404), a version it does not
serve (404), a missing or wrong token where the endpoint checks it before the method (401), the route's own
refusal (405 for the wrong method, 404 for a path that names no endpoint), a missing or wrong token where the
endpoint checks it after the method (401). Routes without a model, a version or a refusal skip those steps.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Auth(enum.Enum):
    """Whether an endpoint needs the bearer token (when auth is on), and whether a 401 goes before a 405."""

    OPEN = "open"  # health, readiness and stats: probes and the operator read them without a token
    BEFORE_METHOD = "before method"
    AFTER_METHOD = "after method"


class Endpoint(NamedTuple):
    name: str
    method: str | None  # the one HTTP method it answers; None: any
    auth: Auth


LIVE = Endpoint("live", None, Auth.OPEN)
READY = Endpoint("ready", None, Auth.OPEN)
SERVER_METADATA = Endpoint("server metadata", None, Auth.BEFORE_METHOD)
V1_MODEL = Endpoint("v1 model", "GET", Auth.OPEN)
V1_PREDICT = Endpoint("v1 predict", "POST", Auth.AFTER_METHOD)
V2_MODEL_READY = Endpoint("v2 model ready", "GET", Auth.OPEN)
V2_STATS = Endpoint("v2 stats", "GET", Auth.OPEN)
V2_METADATA = Endpoint("v2 model metadata", "GET", Auth.BEFORE_METHOD)
V2_INFER = Endpoint("v2 infer", "POST", Auth.BEFORE_METHOD)
NOT_FOUND = Endpoint("not found", None, Auth.OPEN)
#: A path under a model that names no endpoint: the token is checked before the 404.
V2_MODEL_NOT_FOUND = Endpoint("v2 model not found", None, Auth.BEFORE_METHOD)


class Route(NamedTuple):
    endpoint: Endpoint
    model: str | None = None  # the model named in the path, to check against the one served
    version: str | None = None  # the version named in the path (``.../versions/V/...``)
    refusal: tuple[int, str] | None = None  # the 405 or 404 to answer once model, version (and token) pass


_HEALTH = {"live": Route(LIVE), "ready": Route(READY)}
_SERVER_METADATA = Route(SERVER_METADATA)
#: What follows ``/v2/models/NAME[/versions/V]``: nothing (metadata) or one word.
_V2_MODEL_WORDS = {"ready": V2_MODEL_READY, "stats": V2_STATS, "infer": V2_INFER}


#: Routes without a refusal, by path: a server sees the same few paths over and over, so the request path looks
#: them up instead of parsing them again (figures: docs/performance.md#serving-routing). Bounded: clients choose
#: the paths.
_RESOLVED: dict[str, Route] = {}
RESOLVED_MAX = 256


def resolve(method: str, path: str) -> Route:
    """The route of a request; ``path`` without its query string (trailing slashes do not matter)."""
    route = _RESOLVED.get(path)
    if route is not None and (route.endpoint.method is None or route.endpoint.method == method):
        return route
    route = _parse(method, path)
    if route.refusal is None and len(_RESOLVED) < RESOLVED_MAX:
        _RESOLVED[path] = route
    return route


def _parse(method: str, path: str) -> Route:
    parts = path.strip("/").split("/")
    count = len(parts)
    if count == 3 and parts[0] == "v2" and parts[1] == "health" and parts[2] in _HEALTH:
        return _HEALTH[parts[2]]
    if count == 3 and parts[0] == "v1" and parts[1] == "models":
        name, _, verb = parts[2].partition(":")
        if not verb:
            return _checked(V1_MODEL, method, name, None)
        if verb != "predict":
            return Route(NOT_FOUND, name, None, (404, f"unknown verb :{verb}; use :predict"))
        return _checked(V1_PREDICT, method, name, None)
    if count >= 3 and parts[0] == "v2" and parts[1] == "models":
        name, rest, version = parts[2], parts[3:], None
        if rest and rest[0] == "versions":
            if len(rest) < 2:
                return Route(NOT_FOUND, name, None, (404, "missing version after /versions/"))
            version, rest = rest[1], rest[2:]
        if not rest:
            endpoint: Endpoint | None = V2_METADATA
        else:
            endpoint = _V2_MODEL_WORDS.get(rest[0]) if len(rest) == 1 else None
        if endpoint is None:
            return Route(V2_MODEL_NOT_FOUND, name, version, (404, f"no endpoint {'/'.join(rest)} for model {name}"))
        return _checked(endpoint, method, name, version)
    if count == 1 and parts[0] == "v2":
        return _SERVER_METADATA
    return Route(
        NOT_FOUND, None, None, (404, f"no endpoint {path}: use /v1/models/NAME:predict or /v2/models/NAME/infer")
    )


def _checked(endpoint: Endpoint, method: str, model: str, version: str | None) -> Route:
    if method == endpoint.method:
        return Route(endpoint, model, version)
    return Route(endpoint, model, version, (405, f"use {endpoint.method} here, not {method}"))
