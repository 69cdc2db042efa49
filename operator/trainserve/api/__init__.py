"""The trainserve API: TrainingJob and ModelService models, shared by the operator, the CLI and the workloads.

Imports nothing heavier than pydantic, so the workload image can use it without Kopf or Kubernetes.
"""

from .base import API_VERSION, GROUP, VERSION, Condition, ObjectMeta
from .modelservice import ModelService, ModelServiceSpec, ModelServiceStatus
from .trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "ModelService",
    "ModelServiceSpec",
    "ModelServiceStatus",
    "ObjectMeta",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
