"""The per-job identity that lets a training run report progress: it may patch its own TrainingJob's status.

One ServiceAccount (used by the Ray head pod, where the driver runs), one Role limited by ``resourceNames`` to
``get``/``patch`` on ``trainingjobs/status`` of this one TrainingJob, and the RoleBinding between them; all owned
by the TrainingJob, so they go with it.
"""

from __future__ import annotations

from typing import Any

from trainserve.api.base import GROUP
from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.common import child_metadata
from trainserve.naming import job_account_name

Object = dict[str, Any]


def build_status_access(job: TrainingJob) -> tuple[Object, Object, Object]:
    """(ServiceAccount, Role, RoleBinding) for the job's head pod."""
    job_name = job.metadata.name or ""
    name = job_account_name(job_name)
    account: Object = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": child_metadata(job, name)}
    role: Object = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_metadata(job, name),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": ["trainingjobs/status"],
                "resourceNames": [job_name],
                "verbs": ["get", "patch"],
            }
        ],
    }
    binding: Object = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(job, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.metadata.namespace or "default"}],
    }
    return account, role, binding
