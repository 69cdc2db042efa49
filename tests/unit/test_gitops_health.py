"""GitOps health: Argo CD's Lua checks (deploy/argocd/) run in a real Lua 5.1 (gopher-lua's language, with only the
libraries Argo CD opens), and kstatus' reading (Flux, kpt, `kubectl wait`), on the status the real plans write in
every phase (tests/support/status_scenarios.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support import kstatus
from tests.support.argocd import ARGOCD, KINDS, argocd_tests, health_check, script_path
from tests.support.documents import REPO
from tests.support.status_scenarios import Scenario, all_scenarios, modelservice_scenarios, trainingjob_scenarios

SCENARIOS = all_scenarios()
PLANS = REPO / "operator" / "trainserve" / "plans"
#: What Argo CD accepts from a health script (util/lua/lua.go isValidHealthStatusCode); Missing and Unknown are its own.
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended"}
#: Argo CD's and kstatus' words for the same state.
SAME_STATE = {"Healthy": {"Current"}, "Suspended": {"Current", "InProgress"}, "Progressing": {"InProgress", "Current"}}


CHECKS = {kind: health_check(kind) for kind in KINDS}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.obj['kind']}: {s.name}")
def test_argo_cd_reads_every_phase(scenario: Scenario) -> None:
    health = CHECKS[scenario.obj["kind"]](scenario.obj)
    assert health["status"] == scenario.argo, health
    assert isinstance(health["message"], str) and health["message"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.obj['kind']}: {s.name}")
def test_kstatus_reads_every_phase(scenario: Scenario) -> None:
    reading = kstatus.compute(scenario.obj)
    assert reading.status == scenario.kstatus, reading
    if scenario.argo == "Degraded":
        assert scenario.kstatus == "Failed"
    else:
        assert scenario.kstatus in SAME_STATE[scenario.argo]
    ready = next((c for c in scenario.obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)
    if scenario.argo == "Healthy":  # `kubectl wait --for=condition=Ready` returns exactly then, or while it serves
        assert ready is not None and ready["status"] == "True"
    if ready is not None and ready["status"] == "True" and scenario.obj["kind"] == "TrainingJob":
        assert scenario.argo == "Healthy"


def test_summary_conditions_are_abnormal_true_and_carry_the_reason() -> None:
    for scenario in SCENARIOS:
        for condition in scenario.obj.get("status", {}).get("conditions", []):
            if condition["type"] in ("Reconciling", "Stalled"):
                assert condition["status"] == "True", (scenario.name, condition)  # absent when not so (kstatus)
                assert condition["reason"] and condition["message"], (scenario.name, condition)


def _reasons(source: str, type_: str, status: str) -> set[str]:
    return set(re.findall(rf'st\.set\(\s*"{type_}",\s*"{status}",\s*"(\w+)"', source))


def test_the_scenarios_cover_every_phase_and_reason_the_plans_set() -> None:
    job_phases = {s.obj.get("status", {}).get("phase") for s in trainingjob_scenarios()}
    assert {"Pending", "Running", "Succeeded", "Failed", "Suspended"} <= job_phases
    service_source = (PLANS / "modelservice.py").read_text()
    seen: dict[str, set[str]] = {"Ready": set(), "Upgrading": set()}
    for scenario in modelservice_scenarios():
        for condition in scenario.obj.get("status", {}).get("conditions", []):
            if condition["type"] in seen:
                seen[condition["type"]].add(condition["reason"])
    assert _reasons(service_source, "Ready", "False") | {"InvalidSpec"} <= seen["Ready"]
    assert _reasons(service_source, "Upgrading", "True") | {"UpgradeComplete"} <= seen["Upgrading"]


def test_a_check_without_status_or_with_an_unseen_generation_waits() -> None:
    for kind, check in CHECKS.items():
        assert check({"kind": kind, "metadata": {"generation": 1}})["status"] == "Progressing"
        ahead = {"kind": kind, "metadata": {"generation": 3}, "status": {"observedGeneration": 2, "conditions": []}}
        assert check(ahead) == {
            "status": "Progressing",
            "message": "waiting for the trainserve operator to act on the latest spec",
        }


def test_the_shipped_argo_cd_tests_match_the_plans() -> None:
    """deploy/argocd/*/*/health_test.yaml and testdata/ (Argo CD's layout, for `go test ./util/lua/` there) hold
    what the plans write today; regenerate with `python -m tests.support.argocd`."""
    expected = argocd_tests(SCENARIOS)
    for path, text in expected.items():
        assert path.exists() and path.read_text() == text, f"{path.relative_to(REPO)} is stale: regenerate it"
    shipped = {p for p in ARGOCD.rglob("*") if p.is_file()}
    assert shipped == set(expected) | {script_path(kind) for kind in KINDS}


def test_the_install_guide_embeds_exactly_the_shipped_checks() -> None:
    guide = (REPO / "docs" / "install.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, re.S) if "argocd-cm" in b]
    assert len(blocks) == 1, "one argocd-cm snippet in docs/install.md"
    data = blocks[0]["data"]
    for kind in CHECKS:
        shipped = script_path(kind).read_text()
        assert data[f"resource.customizations.health.trainserve.io_{kind}"] == shipped


def test_kstatus_helper_follows_cli_utils_rules_in_order() -> None:
    def obj(*conditions: tuple[str, str], generation: int = 1, observed: int | None = 1, **meta: Any) -> dict[str, Any]:
        status: dict[str, Any] = {"conditions": [{"type": t, "status": s, "message": t} for t, s in conditions]}
        if observed is not None:
            status["observedGeneration"] = observed
        return {"metadata": {"generation": generation, **meta}, "status": status}

    def reads(document: dict[str, Any]) -> str:
        return kstatus.compute(document).status

    assert reads(obj(("Ready", "True"), deletionTimestamp="2026-01-01T00:00:00Z")) == "Terminating"
    assert reads(obj(("Ready", "True"), generation=2)) == "InProgress"
    assert reads(obj(("Ready", "True"), generation=2, observed=None)) == "Current"  # no field, no check
    assert reads(obj(("Stalled", "True"), ("Reconciling", "True"))) == "Failed"  # the first one wins
    assert reads(obj(("Reconciling", "True"), ("Stalled", "True"))) == "InProgress"
    assert reads(obj(("Stalled", "False"), ("Ready", "True"))) == "Current"
    assert reads(obj(("Ready", "False"))) == reads(obj(("Ready", "Unknown"))) == "InProgress"
    assert reads(obj(("Suspended", "True"))) == reads({"metadata": {}}) == "Current"


def test_argo_cd_says_what_holds_the_pods_up() -> None:
    """A job or a service held up by its Ray pods shows the pods' problem (an image that does not pull, a crash
    loop, no node with free GPUs) instead of the last step the operator took; a service that answers says it too."""
    held_up = 0
    for scenario in SCENARIOS:
        conditions = {c["type"]: c for c in scenario.obj.get("status", {}).get("conditions", [])}
        problems = [
            conditions[t] for t in ("PodsHealthy", "Scheduled") if conditions.get(t, {}).get("status") == "False"
        ]
        if not problems:
            continue
        held_up += 1
        health = CHECKS[scenario.obj["kind"]](scenario.obj)
        assert health["message"].count(problems[0]["message"]) == 1, (scenario.name, health)
        assert health["message"].startswith(problems[0]["reason"]) or health["status"] == "Healthy", health
    assert held_up >= 5
