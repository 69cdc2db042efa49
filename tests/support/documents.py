"""Example documents and ways to vary them, for tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRDS = REPO / "crds"


def example(name: str) -> dict[str, Any]:
    """The (single) document of ``examples/<name>.yaml``."""
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def all_examples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def changed(document: dict[str, Any], path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    """A copy of ``document`` with the dotted ``path`` set to ``value`` (or deleted)."""
    out = copy.deepcopy(document)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if delete:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def our_crd(plural: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / f"trainserve.io_{plural}.yaml").read_text())
