"""Names and labels that tie a TrainingJob or ModelService to its children (pure; shared by the API, builders,
plans and handlers)."""

from __future__ import annotations

import re
import unicodedata

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "trainserve"
TRAININGJOB_LABEL = "trainserve.io/trainingjob"
MODELSERVICE_LABEL = "trainserve.io/modelservice"
ATTEMPT_LABEL = "trainserve.io/attempt"
#: Set in a RayJob's pods: the attempt and the TrainingJob's uid, for the run's tracking tags.
ATTEMPT_ENV = "TRAINSERVE_ATTEMPT"
JOB_UID_ENV = "TRAINSERVE_JOB_UID"
SPEC_HASH_ANNOTATION = "trainserve.io/spec-hash"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: KubeRay refuses RayJob names over 47 characters (it appends 6 to name the RayCluster, limited to 53),
#: and wants a DNS-1035 label (a letter first, no dots).
MAX_RAYJOB_NAME = 47
#: Attempts go up to ``backoffLimit + 1 <= 101``: the suffix ``-<attempt>`` takes at most 4 characters.
MAX_ATTEMPT_SUFFIX = 4
MAX_TRAININGJOB_NAME = MAX_RAYJOB_NAME - MAX_ATTEMPT_SUFFIX
TRAININGJOB_NAME_LIMIT = f"KubeRay limits RayJob names to {MAX_RAYJOB_NAME}"
DNS1035_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL = re.compile(DNS1035_PATTERN)


def name_rules(limit: int, why: str) -> list[dict[str, str]]:
    """The CRD's CEL rules on ``metadata.name`` (the API server's twin of ``name_problem``): at most ``limit``
    characters (``why`` says who sets the limit), a DNS-1035 label."""
    return [
        {
            "rule": f"size(self.metadata.name) <= {limit}",
            "message": f"metadata.name must be at most {limit} characters ({why})",
        },
        {
            "rule": f"self.metadata.name.matches('{DNS1035_PATTERN}')",
            "message": "metadata.name must start with a letter and hold only lowercase letters, digits and '-'",
        },
    ]


#: What :func:`suggest_name` offers when nothing of the name is left.
FALLBACK_NAME = "unnamed"


def suggest_name(name: str, limit: int) -> str:
    """A valid DNS-1035 label of at most ``limit`` characters that resembles ``name`` (``Digits_Ü-Job`` ->
    ``digits-u-job``), for the fix of an invalid name: a suggestion must itself be accepted."""
    if limit < 1:
        raise ValueError(f"a name limit must be positive, not {limit}")
    # Compatibility forms decomposed (the `fi` ligature -> `fi`), case folded (`ß` -> `ss`), decomposed again.
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", name).casefold())
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))  # `ü` -> `u`: accents dropped
    dashed = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    if not dashed:
        dashed = FALLBACK_NAME
    elif not dashed[0].isalpha():
        dashed = f"x-{dashed}"
    return dashed[:limit].rstrip("-")


def name_fix(name: str, limit: int) -> str:
    """The fix for an invalid name of a kind whose names hold at most ``limit`` characters."""
    return f"use a DNS-1035 name of at most {limit} characters, e.g. {suggest_name(name, limit)!r}"


def rayjob_name(trainingjob: str, attempt: int) -> str:
    """The RayJob of one attempt: ``digits-1``, ``digits-2``...; deterministic, so creating it twice is a 409."""
    return f"{trainingjob}-{attempt}"


def job_account_name(trainingjob: str) -> str:
    """ServiceAccount, Role and RoleBinding that let the job's head pod patch its own TrainingJob status."""
    return f"{trainingjob}-trainserve-status"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a TrainingJob name, or None when it can."""
    if len(name) > MAX_TRAININGJOB_NAME:
        return (
            f"the name is {len(name)} characters long, but at most {MAX_TRAININGJOB_NAME} are allowed "
            f"({TRAININGJOB_NAME_LIMIT}, and names them '<name>-<attempt>')"
        )
    if not DNS1035_LABEL.match(name):
        return "the name must start with a letter and hold only lowercase letters, digits and '-' (no dots)"
    return None


def child_labels(trainingjob: str) -> dict[str, str]:
    """Labels on every child: ``kubectl get rayjob -l trainserve.io/trainingjob=NAME`` finds them."""
    return {MANAGED_BY_LABEL: MANAGED_BY, TRAININGJOB_LABEL: trainingjob}


def service_labels(modelservice: str) -> dict[str, str]:
    """Labels on every child of a ModelService, its Ray pods included (the scale subresource selects them)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, MODELSERVICE_LABEL: modelservice}


def owner_labels(kind: str, name: str) -> dict[str, str]:
    return service_labels(name) if kind == "ModelService" else child_labels(name)


#: KubeRay names a RayService's Services ``<name>-serve-svc`` / ``<name>-head-svc`` and its clusters
#: ``<name>-<random>``; 47 keeps every derived name within Kubernetes' 63-character limit.
MAX_MODELSERVICE_NAME = 47
MODELSERVICE_NAME_LIMIT = "KubeRay derives Service and cluster names from it"


def service_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a ModelService name, or None when it can."""
    if len(name) > MAX_MODELSERVICE_NAME:
        return (
            f"the name is {len(name)} characters long, but at most {MAX_MODELSERVICE_NAME} are allowed "
            f"({MODELSERVICE_NAME_LIMIT})"
        )
    if not DNS1035_LABEL.match(name):
        return "the name must start with a letter and hold only lowercase letters, digits and '-' (no dots)"
    return None


def serve_service_name(modelservice: str) -> str:
    """The Service KubeRay creates in front of the Serve ingress of a RayService."""
    return f"{modelservice}-serve-svc"
