"""Alerts and the dashboard, checked by Prometheus' own tools: `promtool check rules` on the rendered
PrometheusRule, `promtool test rules` unit tests for every alert, and every dashboard expression parsed by
promtool (as a recording rule); the metric names they use must be ones the operator or the workloads export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging.chart import CHART, REPO, prometheus_groups

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install prometheus (.ci/run does)")

UNIT_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "trainserve.json"

#: Grafana's variables, replaced by what a query would see, so that promtool can parse the expressions.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}

#: Metrics the dashboard or alerts use that the code does not export yet, each with the reason.
NOT_YET_EXPORTED: dict[str, str] = {}
#: Ray's own metrics the dashboard uses.
RAY_METRICS = {"ray_serve_deployment_replica_healthy"}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def write_rules(folder: Path, groups: list[dict[str, Any]], name: str = "rules.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "prometheusRule": {
                "operatorSelector": 'job="ops/trainserve", cluster="eu-1"',
                "runbookUrlBase": "https://runbooks.example/trainserve#",
                "alertLabels": {"team": "ml-platform"},
                "thresholds": {"serveErrorCodes": "5..|429", "serveP99LatencyMs": 250.5, "serveFor": "1h30m"},
            }
        },
    ],
    ids=["defaults", "customized"],
)
def test_promtool_check_rules(tmp_path: Path, values: dict[str, Any]) -> None:
    groups = prometheus_groups(values)
    result = promtool("check", "rules", str(write_rules(tmp_path, groups)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_promtool_unit_tests(tmp_path: Path) -> None:
    """Only `summary` is kept among the annotations for the unit tests (see alerts_test.yaml)."""
    groups = prometheus_groups()
    for rule in alerts(groups):
        rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    write_rules(tmp_path, groups)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts(prometheus_groups())}
    assert names == {
        "TrainserveOperatorDown",
        "TrainserveReconcileErrors",
        "TrainserveTrainingJobFailed",
        "TrainserveTrainingJobStuckPending",
        "TrainserveModelServiceNotReady",
        "TrainserveCanaryRolledBack",
        "TrainserveServeErrorRateHigh",
        "TrainserveServeLatencyHigh",
    }
    assert firing == names and quiet == names


def test_alerts_carry_severity_summary_description_and_runbooks() -> None:
    for rule in alerts(prometheus_groups()):
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "runbook_url" not in rule["annotations"]
    values = {"prometheusRule": {"runbookUrlBase": "https://runbooks/", "alertLabels": {"team": "ml"}}}
    for rule in alerts(prometheus_groups(values)):
        assert rule["annotations"]["runbook_url"] == f"https://runbooks/{rule['alert']}"
        assert rule["labels"]["team"] == "ml"


def test_thresholds_come_from_values() -> None:
    values = {"prometheusRule": {"thresholds": {"serveP99LatencyMs": 123, "trainingJobPendingFor": "2h"}}}
    rules = {rule["alert"]: rule for rule in alerts(prometheus_groups(values))}
    assert rules["TrainserveServeLatencyHigh"]["expr"].rstrip().endswith("> 123")
    assert rules["TrainserveTrainingJobStuckPending"]["for"] == "2h"


# --- the dashboard --------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    out = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert match, query
            out.append((f"variable {variable['name']}", match.group(1)))
    return out


def as_promql(expr: str) -> str:
    """Grafana's variables replaced: intervals by durations, our variables (used in regex matchers) by `.*`."""
    for variable, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    expr = re.sub(r'=~"\$\{?\w+\}?"', '=~".*"', expr)
    assert "$" not in expr, f"a Grafana variable outside a regex matcher: {expr}"
    return expr


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:expression_{index}:check", "expr": as_promql(expr)}
        for index, (_, expr) in enumerate(expressions())
    ]
    assert len(rules) >= 20
    path = write_rules(tmp_path, [{"name": "dashboard", "rules": rules}])
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["uid"] == "trainserve-overview" and board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "operator", "namespace", "model"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"] and panel["targets"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for target in panel["targets"]:
            for used in re.findall(r"\$\{?(\w+)", target["expr"]):
                assert used in variables or f"${used}" in GRAFANA_INTERVALS, used
    titles = {p["title"] for p in panels()}
    for wanted in (
        "TrainingJobs by phase",
        "Training loss per job",
        "Accuracy per job",
        "Request rate",
        "Latency percentiles",
        "Error rate",
        "Serve replicas",
        "Canary share",
        "Reconcile latency",
        "Reconcile errors",
    ):
        assert wanted in titles


def exported_operator_metrics() -> set[str]:
    """Sample names the operator's registry can expose."""
    from trainserve.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    metrics.track_trainingjobs(list)
    metrics.track_services(list)
    names: set[str] = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def workload_metrics() -> set[str]:
    """Names Ray exports for the serving metrics: counters get `_total`, histograms `_bucket`/`_sum`/`_count`."""
    source = (REPO / "workloads" / "trainserve_workloads" / "serve" / "telemetry.py").read_text()
    names: set[str] = set()
    for kind, name in re.findall(r"\b(Counter|Histogram|Gauge)\(\s*\"(\w+)\"", source):
        suffixes = {"Counter": ["_total"], "Histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""])
        names.update(f"ray_{name}{suffix}" for suffix in suffixes)
    return names


def test_dashboard_and_alerts_use_exported_metrics() -> None:
    used: set[str] = set()
    texts = [expr for _, expr in expressions()] + [rule["expr"] for rule in alerts(prometheus_groups())]
    for text in texts:
        used.update(re.findall(r"\b((?:trainserve|ray)_[a-z_]+)\b", text))
    known = exported_operator_metrics() | workload_metrics() | RAY_METRICS | set(NOT_YET_EXPORTED)
    assert used - known == set()
    assert {"ray_trainserve_requests_total", "ray_trainserve_request_latency_ms_bucket"} <= workload_metrics()
    for name in NOT_YET_EXPORTED:
        if name in exported_operator_metrics():
            pytest.fail(f"{name} is exported now: drop it from NOT_YET_EXPORTED")
