"""`trainserve run` logs in to a real cluster: with a kubeconfig (or in-cluster), not only with a test URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from kopf._core.intents.causes import Activity

from trainserve.runner import Operator
from trainserve.settings import OperatorSettings


def test_kubeconfig_credentials_reach_kopf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://k8s.example:6443", "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "abc"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
                "current-context": "x",
            }
        )
    )
    import kubernetes.config.kube_config

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # read by the client at import time, so also:
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    operator = Operator(OperatorSettings(all_namespaces=True, standalone=True, metrics_port=0))
    handlers = operator.registry._activities.get_handlers(activity=Activity.AUTHENTICATION)
    assert handlers, "no login handler: Kopf would stop with 'Ran out of valid credentials'"
    info = asyncio.run(_call(handlers[0].fn))
    assert info.server == "https://k8s.example:6443" and info.token == "abc"


async def _call(fn):  # type: ignore[no-untyped-def]
    import logging

    import kopf

    result = fn(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    return await result if asyncio.iscoroutine(result) else result
