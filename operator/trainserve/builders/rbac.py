"""The per-job identity that lets a training run report progress: it may patch its own TrainingJob's status.

One Role limited by ``resourceNames`` to ``get``/``patch`` on ``trainingjobs/status`` of this one TrainingJob,
bound to the account of the Ray head pod (where the driver runs): a ServiceAccount of the job's own, or the
``spec.podTemplate.spec.serviceAccountName`` the user chose (then trainserve creates no account; the binding
lets that account patch this job's status, nothing more). All owned by the TrainingJob, so they go with it.
"""

from __future__ import annotations

from typing import Any

from trainserve.api.base import GROUP
from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.common import child_metadata
from trainserve.naming import job_account_name

Object = dict[str, Any]


def user_account(job: TrainingJob) -> str | None:
    """The ServiceAccount the job's pods run as by the user's choice (None: the job's own)."""
    template = job.spec.pod_template
    return template.spec.service_account_name if template is not None else None


def head_account(job: TrainingJob) -> str:
    """The ServiceAccount of the job's head pod, which the status Role is bound to."""
    return user_account(job) or job_account_name(job.metadata.name or "")


def build_status_access(job: TrainingJob) -> list[Object]:
    """The objects that give the job's head pod its status access, in the order they are created: the
    ServiceAccount (unless the job names its own), the Role and the RoleBinding (all named
    ``<job>-trainserve-status``)."""
    job_name = job.metadata.name or ""
    name = job_account_name(job_name)
    objects: list[Object] = []
    if user_account(job) is None:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": child_metadata(job, name)})
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
        "subjects": [
            {"kind": "ServiceAccount", "name": head_account(job), "namespace": job.metadata.namespace or "default"}
        ],
    }
    return [*objects, role, binding]
