"""A small NetworkPolicy evaluator: would the cluster's policies let this connection through?

It implements the semantics of ``networking.k8s.io/v1`` NetworkPolicy as the Kubernetes documentation states them
(https://kubernetes.io/docs/concepts/services-networking/network-policies/), for tests that check the policies the
operator writes:

- a pod is isolated for ingress (egress) when some policy in its namespace selects it (``podSelector``) and has
  ``Ingress`` (``Egress``) in ``policyTypes``; ``policyTypes`` defaults to ``Ingress``, plus ``Egress`` when the
  policy has an ``egress`` section. A pod no policy isolates accepts (sends) everything;
- an isolated pod accepts a connection that any rule of any policy selecting it allows (policies add up);
- a rule allows a source when ``from`` is missing or empty, or one of its peers matches: ``podSelector`` alone
  (pods of the policy's namespace), ``namespaceSelector`` alone (every pod of the matching namespaces), both (the
  matching pods of the matching namespaces), or ``ipBlock`` (``cidr`` minus ``except``);
- and a port when ``ports`` is missing or empty, or one entry matches: ``protocol`` (default TCP), and ``port``
  missing (all), a number (up to ``endPort`` when given) or a name (the destination container port of that name);
- a connection passes when the source's egress and the destination's ingress both allow it.

Label selectors take ``matchLabels`` and ``matchExpressions`` (``In``, ``NotIn``, ``Exists``, ``DoesNotExist``);
an empty selector selects everything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Object = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    """A pod (or, with ``namespace=None``, a client outside the cluster known only by its IP)."""

    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.0.0.1"
    #: Container ports by name: ``{"dashboard": (8265, "TCP")}``.
    ports: dict[str, tuple[int, str]] = field(default_factory=dict)


def selects(selector: Object | None, labels: dict[str, str]) -> bool:
    """Whether a label selector matches ``labels`` (an empty selector matches everything)."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {operator!r}")
    return True


def policy_types(policy: Object) -> list[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


class Cluster:
    """Namespaces (name -> labels; the ``kubernetes.io/metadata.name`` label is added as Kubernetes does) and the
    NetworkPolicies in force."""

    def __init__(self, namespaces: dict[str, dict[str, str]], policies: Iterable[Object]):
        self.namespaces = {name: {**labels, "kubernetes.io/metadata.name": name} for name, labels in namespaces.items()}
        self.policies = list(policies)

    def allowed(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        """Whether a connection from ``source`` to ``destination``'s ``port`` gets through."""
        if destination.namespace is None:
            raise ValueError("the destination must be a pod in the cluster")
        egress = source.namespace is None or self._side_allows(source, destination, port, protocol, "Egress")
        return egress and self._side_allows(destination, source, port, protocol, "Ingress")

    def _side_allows(self, pod: Pod, peer: Pod, port: int, protocol: str, direction: str) -> bool:
        """Whether ``pod``'s policies of ``direction`` allow talking to ``peer`` (on the destination's port)."""
        isolating = [
            p
            for p in self.policies
            if p["metadata"].get("namespace") == pod.namespace
            and direction in policy_types(p)
            and selects(p["spec"].get("podSelector"), pod.labels)
        ]
        if not isolating:
            return True
        target = pod if direction == "Ingress" else peer
        rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        return any(
            self._peer_matches(rule.get(peers_key), peer, policy["metadata"].get("namespace"))
            and _port_matches(rule.get("ports"), target, port, protocol)
            for policy in isolating
            for rule in policy["spec"].get(rules_key) or []
        )

    def _peer_matches(self, peers: list[Object] | None, pod: Pod, policy_namespace: str | None) -> bool:
        if not peers:
            return True
        return any(self._one_peer(peer, pod, policy_namespace) for peer in peers)

    def _one_peer(self, peer: Object, pod: Pod, policy_namespace: str | None) -> bool:
        if "ipBlock" in peer:
            return _in_block(peer["ipBlock"], pod.ip)
        if pod.namespace is None:  # outside the cluster: only an ipBlock can name it
            return False
        if "namespaceSelector" in peer:
            namespace_ok = selects(peer["namespaceSelector"], self.namespaces.get(pod.namespace, {}))
        else:
            namespace_ok = pod.namespace == policy_namespace
        pod_ok = "podSelector" not in peer or selects(peer["podSelector"], pod.labels)
        return namespace_ok and pod_ok


def _in_block(block: Object, ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if address not in ipaddress.ip_network(block["cidr"]):
        return False
    return not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])


def _port_matches(ports: list[Object] | None, target: Pod, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            named = target.ports.get(wanted)
            if named is not None and named == (port, protocol):
                return True
        elif wanted <= port <= entry.get("endPort", wanted):
            return True
    return False
