"""Argo CD's health checks of our kinds (deploy/argocd/, Argo CD's resource_customizations layout), run as Argo CD
runs them, and the Argo CD test files generated from the status scenarios.

Argo CD's contract (docs/operator-manual/health.md, util/lua/lua.go): the resource is the global ``obj``, the script
returns a table with ``status`` and ``message``, and only Lua's base and table libraries are open (gopher-lua, Lua
5.1). Regenerate the test files with ``python -m tests.support.argocd``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import yaml

from tests.support.documents import REPO
from tests.support.status_scenarios import Scenario, all_scenarios

ARGOCD = REPO / "deploy" / "argocd"
KINDS = ("TrainingJob", "ModelService")
HealthCheck = Callable[[dict[str, Any]], dict[str, Any]]
_BASE = ("ipairs", "pairs", "next", "type", "tostring", "tonumber", "select", "error", "pcall", "assert", "unpack")


def script_path(kind: str) -> Path:
    return ARGOCD / "trainserve.io" / kind / "health.lua"


def health_check(kind: str) -> HealthCheck:
    """The shipped health.lua of ``kind`` in a real Lua 5.1 with only what Argo CD opens."""
    source = script_path(kind).read_text()
    lua = lua51.LuaRuntime(register_eval=False)
    run = lua.eval(
        """function(source, env)
             local script, err = loadstring(source, "=health.lua")
             if script == nil then error(err) end
             setfenv(script, env)
             return script()
           end"""
    )
    globals_ = lua.globals()

    def check(obj: dict[str, Any]) -> dict[str, Any]:
        env = lua.table_from({name: globals_[name] for name in _BASE})
        env["table"] = globals_["table"]
        env["obj"] = lua.table_from(obj, recursive=True)
        return dict(run(source, env))

    return check


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def argocd_tests(scenarios: list[Scenario] | None = None) -> dict[Path, str]:
    """Argo CD's ``health_test.yaml`` and ``testdata/*.yaml`` per kind: every scenario's object and its health."""
    files: dict[Path, str] = {}
    for kind in KINDS:
        check = health_check(kind)
        folder = script_path(kind).parent
        tests = []
        for scenario in scenarios if scenarios is not None else all_scenarios():
            if scenario.obj["kind"] != kind:
                continue
            data = folder / "testdata" / f"{_slug(scenario.name)}.yaml"
            files[data] = yaml.safe_dump(scenario.obj, sort_keys=False, width=120)
            tests.append({"healthStatus": check(scenario.obj), "inputPath": f"testdata/{data.name}"})
        header = "# Generated from tests/support/status_scenarios.py (the operator's plans); do not edit.\n"
        files[folder / "health_test.yaml"] = header + yaml.safe_dump({"tests": tests}, sort_keys=False, width=120)
    return files


if __name__ == "__main__":
    for stale in ARGOCD.glob("*/*/testdata/*.yaml"):
        stale.unlink()
    for path, text in argocd_tests().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(REPO))
