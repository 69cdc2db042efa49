"""The in-cluster identity of the stand-in's Ray "pods": ServiceAccount tokens the emulated API server knows,
RBAC checks of the requests that carry them, and the API server over TLS with a throwaway CA (``trustme``).

A real API server authenticates a pod's projected token and authorizes the request against Roles and
RoleBindings; the emulator does the same for the tokens minted here (every other caller, the operator and the
test, stays unrestricted). Only what trainserve's pods use is evaluated: namespaced Roles bound by RoleBindings.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import kmock
import trustme

ROLES = "rbac.authorization.k8s.io/v1/roles"
ROLEBINDINGS = "rbac.authorization.k8s.io/v1/rolebindings"
SECRETS = "v1/secrets"
_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete", "POST": "create"}


@dataclass(frozen=True)
class Account:
    namespace: str
    name: str


@dataclass(frozen=True)
class AuthorizedCall:
    """A request made with a minted token: who, what, and the API server's verdict."""

    account: Account
    verb: str
    resource: str
    name: str | None
    allowed: bool
    body: Any


class TokenRegistry:
    """Mints one token per ServiceAccount (as the kubelet mounts one per pod) and remembers the calls made with them."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.calls: list[AuthorizedCall] = []

    def mint(self, namespace: str, name: str) -> str:
        for token, account in self.accounts.items():
            if account == Account(namespace, name):
                return token
        token = secrets.token_urlsafe(32)
        self.accounts[token] = Account(namespace, name)
        return token

    def account_of(self, request: kmock.Request) -> Account | None:
        header = str(request.headers.get("Authorization", ""))
        return self.accounts.get(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None


def _live(objects: Any, resource: str, namespace: str) -> Iterator[dict[str, Any]]:
    for (res, ns, _), obj in list(objects.items()):
        if str(res) == str(kmock.resource(resource)) and ns == namespace and not obj.deleted:
            yield obj.raw


def _rule_allows(rule: dict[str, Any], group: str, resource: str, verb: str, name: str | None) -> bool:
    return (
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
    )


def authorize(objects: Any, account: Account, request: kmock.Request) -> AuthorizedCall:
    """RBAC as the API server evaluates it for a namespaced request: any rule of any Role bound to the account."""
    res = request.resource
    group = res.group if res is not None and res.group else ""
    plural = (res.plural if res is not None else "") or ""
    resource = f"{plural}/{request.subresource}" if request.subresource else plural
    verb = _VERBS.get(str(request.method.value).upper(), "")
    allowed = False
    if request.namespace == account.namespace:
        roles = {role["metadata"]["name"]: role for role in _live(objects, ROLES, account.namespace)}
        for binding in _live(objects, ROLEBINDINGS, account.namespace):
            subject = {"kind": "ServiceAccount", "name": account.name, "namespace": account.namespace}
            if not any(all(s.get(k) == v for k, v in subject.items()) for s in binding.get("subjects", [])):
                continue
            role = roles.get(binding.get("roleRef", {}).get("name", ""))
            rules = (role or {}).get("rules", [])
            allowed = allowed or any(_rule_allows(rule, group, resource, verb, request.name) for rule in rules)
    return AuthorizedCall(account, verb, resource, request.name, allowed, request.data)


class TlsEndpoint:
    """The emulator's second listener, over HTTPS with a certificate for 127.0.0.1 from a throwaway CA."""

    def __init__(self, handler: Any, workdir: Path):
        self.ca = trustme.CA()
        self.ca_file = workdir / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(self.context)
        self.server = aiohttp.test_utils.RawTestServer(handler, host="127.0.0.1")

    async def __aenter__(self) -> TlsEndpoint:
        await self.server.start_server(ssl=self.context)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.server.close()

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port
