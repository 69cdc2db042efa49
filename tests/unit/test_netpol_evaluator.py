"""The test NetworkPolicy evaluator (tests/support/netpol.py) against the semantics Kubernetes documents."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.netpol import Cluster, Pod, policy_types, selects

APP = Pod("app", {"role": "db"}, ip="10.1.0.5", ports={"postgres": (5432, "TCP"), "stats": (9187, "TCP")})
FRIEND = Pod("app", {"role": "web"}, ip="10.1.0.6")
STRANGER = Pod("other", {"role": "web"}, ip="10.2.0.7")
MONITOR = Pod("monitoring", {"app": "prometheus"}, ip="10.3.0.8")
OUTSIDE = Pod(None, ip="203.0.113.9")
NAMESPACES = {"app": {"team": "a"}, "other": {"team": "b"}, "monitoring": {"team": "ops"}}


def policy(spec: dict[str, Any], namespace: str = "app") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def cluster(*policies: dict[str, Any]) -> Cluster:
    return Cluster(NAMESPACES, policies)


DB = {"matchLabels": {"role": "db"}}


def test_a_pod_no_policy_selects_accepts_everything() -> None:
    other_pods = policy({"podSelector": {"matchLabels": {"role": "cache"}}, "ingress": []})
    elsewhere = policy({"podSelector": {}, "ingress": []}, namespace="other")
    for source in (FRIEND, STRANGER, OUTSIDE):
        assert cluster(other_pods, elsewhere).allowed(source, APP, 5432)


def test_a_selecting_policy_without_rules_refuses_everything() -> None:
    deny = cluster(policy({"podSelector": DB, "policyTypes": ["Ingress"]}))
    for source in (FRIEND, STRANGER, OUTSIDE):
        assert not deny.allowed(source, APP, 5432)
    assert deny.allowed(APP, FRIEND, 80)  # FRIEND is not selected; APP's egress is not isolated


def test_a_pod_selector_peer_means_the_policys_own_namespace() -> None:
    web = cluster(
        policy({"podSelector": DB, "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}]}]})
    )
    assert web.allowed(FRIEND, APP, 5432)
    assert not web.allowed(STRANGER, APP, 5432)  # same labels, other namespace


def test_namespace_selector_alone_and_together_with_a_pod_selector() -> None:
    alone = cluster(
        policy({"podSelector": DB, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]})
    )
    assert alone.allowed(STRANGER, APP, 5432) and not alone.allowed(FRIEND, APP, 5432)
    both = {
        "namespaceSelector": {"matchLabels": {"team": "ops"}},
        "podSelector": {"matchLabels": {"app": "prometheus"}},
    }
    together = cluster(policy({"podSelector": DB, "ingress": [{"from": [both]}]}))
    assert together.allowed(MONITOR, APP, 9187)
    assert not together.allowed(Pod("monitoring", {"app": "grafana"}), APP, 9187)
    everywhere = cluster(policy({"podSelector": DB, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    assert everywhere.allowed(STRANGER, APP, 1) and not everywhere.allowed(OUTSIDE, APP, 1)


def test_namespaces_are_matched_by_their_name_label() -> None:
    by_name = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    named = cluster(policy({"podSelector": DB, "ingress": [{"from": [by_name]}]}))
    assert named.allowed(MONITOR, APP, 9187) and not named.allowed(STRANGER, APP, 9187)


def test_ip_blocks_with_exceptions() -> None:
    block = {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}
    ips = cluster(policy({"podSelector": DB, "ingress": [{"from": [block]}]}))
    assert ips.allowed(OUTSIDE, APP, 5432)
    assert not ips.allowed(Pod(None, ip="203.0.113.200"), APP, 5432)
    assert not ips.allowed(FRIEND, APP, 5432)


def test_ports_by_number_range_name_and_protocol() -> None:
    ports = [
        {"protocol": "TCP", "port": 5432},
        {"port": 7000, "endPort": 7010},
        {"port": "stats"},
        {"protocol": "UDP", "port": 53},
    ]
    rules = cluster(policy({"podSelector": DB, "ingress": [{"ports": ports}]}))
    assert rules.allowed(STRANGER, APP, 5432)
    assert rules.allowed(STRANGER, APP, 7000) and rules.allowed(STRANGER, APP, 7010)
    assert not rules.allowed(STRANGER, APP, 7011)
    assert rules.allowed(STRANGER, APP, 9187)  # the container port named `stats`
    assert not rules.allowed(STRANGER, APP, 5433)
    assert rules.allowed(STRANGER, APP, 53, "UDP") and not rules.allowed(STRANGER, APP, 53)
    assert not rules.allowed(STRANGER, APP, 5432, "UDP")  # the protocol defaults to TCP


def test_a_rule_needs_both_its_peers_and_its_ports_and_policies_add_up() -> None:
    web_db = policy({"podSelector": DB, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 5432}]}]})
    metrics = policy({"podSelector": DB, "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 9187}]}]})
    both = cluster(web_db, metrics)
    assert both.allowed(FRIEND, APP, 5432) and not both.allowed(STRANGER, APP, 5432)
    assert both.allowed(STRANGER, APP, 9187)
    assert not both.allowed(FRIEND, APP, 22)


def test_egress_isolation_of_the_source_counts_too() -> None:
    only_dns = policy(
        {"podSelector": {"matchLabels": {"role": "web"}}, "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}
    )
    assert policy_types(only_dns) == ["Ingress", "Egress"]
    assert not cluster(only_dns).allowed(FRIEND, APP, 5432)
    allowed_out = policy(
        {
            "podSelector": {"matchLabels": {"role": "web"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": DB}]}],
        }
    )
    assert cluster(allowed_out).allowed(FRIEND, APP, 5432)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, {"a": "3"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_label_selectors(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert selects(selector, labels) is expected
