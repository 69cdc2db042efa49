"""What the operator asks of the API server, and whether the chart's RBAC allows exactly that.

``call_of`` turns one recorded HTTP request into an RBAC request (API group, resource, subresource, verb,
namespace, name), the way the API server's request-info resolver does; ``Authorizer`` evaluates the rendered
ClusterRoles, Roles and their bindings for the operator's ServiceAccount the way the RBAC authorizer does
(no aggregation, no wildcards: the chart has none, and a test checks that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Object = dict[str, Any]

VERBS_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True, order=True)
class Call:
    """One RBAC request: what the authorizer sees for an API call."""

    verb: str
    group: str
    resource: str  # "trainingjobs" or "trainingjobs/status"
    namespace: str | None = None
    name: str | None = None
    why: str = field(default="", compare=False)  # for messages: the request line

    @property
    def key(self) -> tuple[str, str, str]:
        return self.group, self.resource, self.verb

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " (cluster scope)"
        group = self.group or "core"
        return f"{self.verb} {group}/{self.resource}{where} [{self.why}]"


def call_of(method: str, path: str, params: Mapping[str, str], body: Any = None) -> Call | None:
    """The RBAC request of an HTTP request; None for discovery and other non-resource URLs (``/api``,
    ``/apis/GROUP/VERSION``, ``/version``), which every authenticated user may read (system:discovery)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # discovery of a group version
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    method = method.upper()
    if method == "GET":
        verb = "get" if name else ("watch" if params.get("watch") in ("true", "1") else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = VERBS_BY_METHOD[method]
    if verb == "create" and name is None and isinstance(body, dict):
        name = (body.get("metadata") or {}).get("name")
    return Call(verb, group, resource, namespace, name, why=f"{method} {path.split('?')[0]}")


def implied_by_created_roles(method: str, path: str, body: Any) -> list[Call]:
    """Creating a Role is allowed only if the creator holds every permission in it (or may ``escalate``,
    which the chart does not grant): each rule of each created Role is a permission the operator must hold."""
    call = call_of(method, path, {}, body)
    if call is None or call.key != ("rbac.authorization.k8s.io", "roles", "create") or not isinstance(body, dict):
        return []
    out = []
    for rule in body.get("rules") or []:
        names = rule.get("resourceNames") or [None]
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    for name in names:
                        why = f"held to create Role {call.namespace}/{call.name}"
                        out.append(Call(verb, group, resource, call.namespace, name, why=why))
    return out


@dataclass(frozen=True)
class Grant:
    """One (group, resource, verb) of one rule of one Role or ClusterRole."""

    role: str  # "ClusterRole/x" or "Role/ns/x"
    rule: int
    group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        return f"{self.role} rule {self.rule}: {self.verb} {self.group or 'core'}/{self.resource}"


class Authorizer:
    """The RBAC authorizer over rendered objects, for one ServiceAccount."""

    def __init__(self, objects: Iterable[Object], account: str, account_namespace: str):
        objs = list(objects)
        self.roles: dict[str, Object] = {}
        for obj in objs:
            if obj.get("kind") == "ClusterRole":
                self.roles[f"ClusterRole/{obj['metadata']['name']}"] = obj
            elif obj.get("kind") == "Role":
                self.roles[f"Role/{obj['metadata']['namespace']}/{obj['metadata']['name']}"] = obj
        # (role key, namespace the binding limits it to, or None for a ClusterRoleBinding)
        self.bound: list[tuple[str, str | None]] = []
        for obj in objs:
            if obj.get("kind") not in ("ClusterRoleBinding", "RoleBinding"):
                continue
            subjects = obj.get("subjects") or []
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == account
                and s.get("namespace") == account_namespace
                for s in subjects
            ):
                continue
            ref = obj["roleRef"]
            if obj["kind"] == "ClusterRoleBinding":
                self.bound.append((f"ClusterRole/{ref['name']}", None))
            else:
                ns = obj["metadata"]["namespace"]
                key = f"ClusterRole/{ref['name']}" if ref["kind"] == "ClusterRole" else f"Role/{ns}/{ref['name']}"
                self.bound.append((key, ns))

    def grants(self) -> list[Grant]:
        """Every (group, resource, verb) granted to the account, per role and rule."""
        out = []
        for key, _ in self.bound:
            for index, rule in enumerate((self.roles.get(key) or {}).get("rules") or []):
                for group in rule.get("apiGroups") or []:
                    for resource in rule.get("resources") or []:
                        for verb in rule.get("verbs") or []:
                            out.append(Grant(key, index, group, resource, verb))
        return out

    def matching(self, call: Call) -> list[Grant]:
        """The grants that allow ``call`` (empty: the API server would answer 403)."""
        out = []
        for key, scope in self.bound:
            if scope is not None and call.namespace != scope:
                continue  # a RoleBinding grants only inside its namespace, never cluster-scoped requests
            for index, rule in enumerate((self.roles.get(key) or {}).get("rules") or []):
                names = rule.get("resourceNames") or []
                if names and call.name not in names:
                    continue
                if (
                    call.group in (rule.get("apiGroups") or [])
                    and call.resource in (rule.get("resources") or [])
                    and call.verb in (rule.get("verbs") or [])
                ):
                    out.append(Grant(key, index, call.group, call.resource, call.verb))
        return out


def compare(
    calls: Iterable[Call], authorizer: Authorizer, allowed_unused: Mapping[tuple[str, str, str], str]
) -> list[str]:
    """Problems: calls the RBAC refuses, and grants no call needs (unless allow-listed with a reason)."""
    problems = []
    used: set[Grant] = set()
    for call in sorted(set(calls)):
        found = authorizer.matching(call)
        if not found:
            problems.append(f"not granted: {call}")
        used.update(found)
    for grant in authorizer.grants():
        if grant not in used and (grant.group, grant.resource, grant.verb) not in allowed_unused:
            problems.append(f"granted but never used: {grant}")
    return problems
