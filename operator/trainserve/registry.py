"""MLflow's model registry: which version a ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` URI names now.

Asked over MLflow's REST API (``model-versions/get``, ``registered-models/alias``) with the standard library, so
the operator needs no MLflow package; credentials come from the caller's environment under MLflow's own names
(``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``), as MLflow's client
reads them. Shared by the operator and ``trainserve local serve``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainserve.api.modelservice import REGISTRY_SCHEME

REQUEST_TIMEOUT_SECONDS = 10.0
#: A failed lookup is tried again this soon, however long the resolve interval.
FAILURE_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class RegistryRef:
    """A parsed ``models:/`` URI: a registered model and a version number or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None


@dataclass(frozen=True)
class RegisteredVersion:
    """One model version: its number and where its files are (``source``, as registered)."""

    version: int
    source: str


class RegistryError(Exception):
    """A URI the registry could not resolve; ``reason`` is the condition reason the operator reports."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_registry_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(REGISTRY_SCHEME)


def parse_registry_uri(uri: str) -> RegistryRef:
    """``models:/digits/3`` or ``models:/digits@champion`` (the API has checked the form)."""
    rest = uri[len(REGISTRY_SCHEME) :]
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        return RegistryRef(name, alias=alias)
    name, version = rest.rsplit("/", 1)
    return RegistryRef(name, version=int(version))


def _auth_header() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def lookup(tracking_uri: str, uri: str, timeout: float = REQUEST_TIMEOUT_SECONDS) -> RegisteredVersion:
    """The version ``uri`` names now, asked of the tracking server; RegistryError when it cannot say."""
    ref = parse_registry_uri(uri)
    if ref.alias is not None:
        path, query = "registered-models/alias", {"name": ref.name, "alias": ref.alias}
    else:
        path, query = "model-versions/get", {"name": ref.name, "version": str(ref.version)}
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Accept": "application/json", **_auth_header()})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as err:
        raise _refusal(uri, tracking_uri, err) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise RegistryError(
            "RegistryUnavailable", f"MLflow at {tracking_uri} did not answer for {uri}: {err}"
        ) from None
    found = answer.get("model_version") or {}
    source = found.get("source")
    if not source or not str(found.get("version", "")).isdigit():
        raise RegistryError("RegistryUnavailable", f"MLflow at {tracking_uri} answered {uri} without a version source")
    return RegisteredVersion(int(found["version"]), str(source))


def _refusal(uri: str, tracking_uri: str, err: urllib.error.HTTPError) -> RegistryError:
    try:
        detail = json.loads(err.read() or b"{}")
    except ValueError:
        detail = {}
    message = detail.get("message") or err.reason
    if err.code == 404 or detail.get("error_code") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
        return RegistryError("RegisteredModelNotFound", f"{uri} is not in the registry at {tracking_uri}: {message}")
    if err.code in (401, 403):
        return RegistryError(
            "RegistryUnauthorized",
            f"MLflow at {tracking_uri} refused the operator ({err.code}): {message}; give the operator credentials "
            "(docs/install.md, MLflow registry)",
        )
    return RegistryError("RegistryUnavailable", f"MLflow at {tracking_uri} answered {err.code} for {uri}: {message}")


class RegistryAnswers:
    """The registry's answers for the URIs of many services, each asked again once its interval has passed
    (failures sooner), and never more than once per interval however often a service reconciles."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._answers: dict[tuple[str, str], tuple[float, RegisteredVersion | RegistryError]] = {}

    async def for_spec(self, spec: dict[str, Any]) -> dict[str, RegisteredVersion | RegistryError]:
        """Answers for the ``models:/`` URIs of a ModelService's (raw) spec: its model's and its canary's."""
        found: dict[str, RegisteredVersion | RegistryError] = {}
        for ref in (spec.get("model"), (spec.get("canary") or {}).get("model")):
            ref = ref if isinstance(ref, dict) else {}
            uri, registry = ref.get("uri"), ref.get("registry")
            if isinstance(uri, str) and is_registry_uri(uri) and isinstance(registry, dict):
                interval = float(registry.get("resolveIntervalSeconds") or 60)
                found[uri] = await self._answer(str(registry.get("trackingUri", "")), uri, interval)
        return found

    async def _answer(self, tracking_uri: str, uri: str, interval: float) -> RegisteredVersion | RegistryError:
        key = (tracking_uri, uri)
        cached = self._answers.get(key)
        now = self.clock()
        if cached is not None:
            asked, answer = cached
            fresh_for = interval if isinstance(answer, RegisteredVersion) else min(interval, FAILURE_RETRY_SECONDS)
            if now - asked < fresh_for:
                return answer
        try:
            answer = await asyncio.to_thread(lookup, tracking_uri, uri)
        except RegistryError as err:
            answer = err
        self._answers[key] = (now, answer)
        return answer
