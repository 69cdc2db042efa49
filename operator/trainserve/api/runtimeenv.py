"""``spec.runtimeEnv``: user code and packages without building an image, as Ray's runtime environment."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from .base import MAX_URI, ApiModel

#: A pip requirement line (``pkg==1.2``, ``pkg[extra]>=1``, a URL): bounded, so CEL and etcd stay cheap.
MAX_REQUIREMENT = 512
MAX_PACKAGES = 64
MAX_ENV_VARS = 64
MAX_ENV_VALUE = 4096
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, max_length=256)]
#: Where ``workingDir`` may come from: Ray downloads remote archives itself; ``pvc://`` is a mounted claim.
REMOTE_SCHEMES = ("s3://", "gs://", "https://", "pvc://")


class RuntimeEnvSpec(ApiModel):
    """Ray's runtime environment for the job's driver and workers (or the serving replicas)."""

    pip: list[Annotated[str, Field(min_length=1, max_length=MAX_REQUIREMENT)]] = Field(
        default_factory=list,
        max_length=MAX_PACKAGES,
        description="pip requirements installed into a virtualenv on each node before the code runs, e.g. "
        "`scikit-image==0.24.0` (Ray's `runtime_env.pip`; the cluster needs access to a package index).",
    )
    working_dir: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_URI,
        description="Code to run with: a zip archive at `s3://`, `gs://` or `https://`, or a folder at `pvc://CLAIM/PATH`; "
        "locally also a folder on this machine. It becomes the working directory and is importable, so "
        "`model.entrypoint: my_pkg.models:build` finds `my_pkg` there (Ray's `runtime_env.working_dir`).",
    )
    env_vars: dict[EnvName, Annotated[str, Field(max_length=MAX_ENV_VALUE)]] = Field(
        default_factory=dict,
        max_length=MAX_ENV_VARS,
        description="Environment variables of the Ray workers and the driver (Ray's `runtime_env.env_vars`); "
        "for secrets use `storageSecretRef` or the pod template, not this.",
    )

    def to_ray(self, working_dir: str | None = None) -> dict[str, Any]:
        """Ray's ``runtime_env`` dictionary; ``working_dir`` replaces the spec's (a resolved location)."""
        out: dict[str, Any] = {}
        where = working_dir or self.working_dir
        if where:
            out["working_dir"] = where
        if self.pip:
            out["pip"] = list(self.pip)
        if self.env_vars:
            out["env_vars"] = dict(self.env_vars)
        return out
