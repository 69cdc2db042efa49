"""Pure builders: a TrainingJob (and the operator's settings) in, the Kubernetes objects it needs out."""

from .rayjob import build_rayjob, resolved_config, section_hashes
from .rbac import build_status_access

__all__ = ["build_rayjob", "build_status_access", "resolved_config", "section_hashes"]
