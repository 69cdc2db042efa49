"""A KubeRay cluster spec (``headGroupSpec`` + ``workerGroupSpecs``) as local Ray processes: what the kubelet and
KubeRay's pod builder would run, on this machine.

Each cluster is one ``ray start --head`` in its own mount namespace (``unshare -m``, so it needs root, as CI has):
``/var/run/secrets/kubernetes.io/serviceaccount`` holds the pod's token and the API server's CA, and every
``persistentVolumeClaim`` mount is a local folder (``<volumes>/<claim>``) bind-mounted at the container's
``mountPath``, so the operator's paths and ``TRAINSERVE_VOLUMES_DIR`` are used as written.

Where it differs from pods: the worker groups' resources (``num-cpus``/``num-gpus``/``memory`` of their
``rayStartParams`` times ``replicas``) are added to the head node instead of starting a raylet per replica (two
cores hold one Ray node per cluster, not three), so the workers' processes share the head's environment, token
and mounts (the builders give head and workers the same env; this module refuses specs where they differ). Every
port is a free loopback port: the nodes of all clusters share one network, where pods each have their own IP.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.podidentity import SECRETS
from trainserve_workloads.lifecycle import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Marks every process of one cluster (inherited by all of them), so stopping it ends exactly those.
POD_MARKER_ENV = "TRAINSERVE_LOCAL_RAY_CLUSTER"
#: Ray start parameters KubeRay adds when missing (common/pod.go setMissingRayStartParams); ports are ours.
_PORT_PARAMS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "metrics-export-port",
)

Object = dict[str, Any]


class UnsupportedSpec(ValueError):
    """A cluster spec this stand-in cannot run (it says which field, and why)."""


def _secret_data(objects: Any, namespace: str, name: str) -> dict[str, str]:
    try:
        obj = objects[SECRETS, namespace, name]
    except KeyError:
        raise UnsupportedSpec(f"Secret {namespace}/{name} does not exist (the pod would not start)") from None
    if obj.deleted:
        raise UnsupportedSpec(f"Secret {namespace}/{name} does not exist (the pod would not start)")
    raw: Object = obj.raw
    data = {key: base64.b64decode(value).decode() for key, value in (raw.get("data") or {}).items()}
    return data | dict(raw.get("stringData") or {})


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(NAME)`` references to variables defined before (``$$`` escapes)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", lambda m: env.get(m[1], m[0]) if m[1] else "$", value)


def container_env(container: Object, objects: Any, namespace: str, pod_fields: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: ``envFrom`` Secrets first, then ``env`` in order
    (``value`` with ``$(NAME)`` expansion, ``fieldRef``, ``secretKeyRef``)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            prefix = source.get("prefix", "")
            env |= {prefix + k: v for k, v in _secret_data(objects, namespace, source["secretRef"]["name"]).items()}
    for entry in container.get("env") or []:
        name, source = entry["name"], entry.get("valueFrom")
        if source is None:
            env[name] = _expand(str(entry.get("value", "")), env)
        elif "fieldRef" in source:
            env[name] = pod_fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = _secret_data(objects, namespace, ref["name"])
            if ref["key"] not in data:
                raise UnsupportedSpec(f"Secret {namespace}/{ref['name']} has no key {ref['key']!r}")
            env[name] = data[ref["key"]]
        else:
            raise UnsupportedSpec(f"env {name}: valueFrom {sorted(source)} is not supported by the stand-in")
    return env


def claim_mounts(pod: Object, volumes_root: Path) -> dict[str, Path]:
    """mountPath -> local folder for each PersistentVolumeClaim the Ray container mounts (``/dev/shm`` stays)."""
    volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            folder = volumes_root / volume["persistentVolumeClaim"]["claimName"]
            folder.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = folder
        elif not ("emptyDir" in volume and mount["mountPath"] == "/dev/shm"):
            raise UnsupportedSpec(f"volume {mount['name']}: only claims and /dev/shm are supported by the stand-in")
    return mounts


@dataclass
class PodIdentity:
    """What the kubelet mounts for a pod's ServiceAccount, and where the in-cluster API server is."""

    token: str
    namespace: str
    ca_file: Path
    api_port: int


@dataclass
class ClusterPlan:
    """Everything one local Ray cluster needs, resolved from the spec and the API (Secrets)."""

    name: str
    head_params: dict[str, str]
    env: dict[str, str]
    mounts: dict[str, Path]
    identity: PodIdentity | None
    ports: dict[str, int] = field(default_factory=lambda: {p: free_port() for p in _PORT_PARAMS})


def _group_resources(groups: list[Object]) -> dict[str, float]:
    """The worker groups' Ray resources, summed over their replicas (they join the head node here)."""
    total = {"num-cpus": 0.0, "num-gpus": 0.0}
    for group in groups:
        params, replicas = group.get("rayStartParams") or {}, int(group.get("replicas", 1))
        for key in total:
            total[key] += float(params.get(key, 0)) * replicas
    return total


def plan_cluster(
    name: str, cluster_spec: Object, objects: Any, namespace: str, volumes_root: Path, identity: PodIdentity | None
) -> ClusterPlan:
    """The one place where a cluster spec becomes a process environment: add KubeRay's injected env here."""
    head = cluster_spec["headGroupSpec"]
    pod, workers = head["template"], cluster_spec.get("workerGroupSpecs") or []
    fields = {"metadata.namespace": namespace, "metadata.name": f"{name}-head", "spec.nodeName": "localhost"}
    env = container_env(pod["spec"]["containers"][0], objects, namespace, fields)
    for group in workers:
        worker_env = container_env(group["template"]["spec"]["containers"][0], objects, namespace, fields)
        if worker_env != env:
            raise UnsupportedSpec(f"worker group {group.get('groupName')}: env differs from the head's")
    # KubeRay's own variables (common/pod.go setContainerEnvVars): the RayCluster's name, the pod's name.
    env |= {"RAY_CLUSTER_NAME": name, "RAY_CLOUD_INSTANCE_ID": f"{name}-head"}
    params = dict(head.get("rayStartParams") or {})
    extra = _group_resources(workers)
    params["num-cpus"] = str(int(float(params.get("num-cpus", 0)) + extra["num-cpus"]))
    params["num-gpus"] = str(int(float(params.get("num-gpus", 0)) + extra["num-gpus"]))
    mounts = claim_mounts(pod, volumes_root)
    return ClusterPlan(name=name, head_params=params, env=env, mounts=mounts, identity=identity)


def _mount_script(plan: ClusterPlan, token_dir: Path | None, pod_tmp: Path) -> list[str]:
    """The pod's filesystem view, in its own mount namespace: a private /run with the token, claims under /mnt,
    and a private /tmp (Ray and Serve keep sockets and HAProxy's config at fixed paths there)."""
    lines = ["set -e", "mount -t tmpfs tmpfs /run", "ln -s /dev/shm /run/shm", "mkdir -m 1777 /run/lock"]
    if token_dir is not None:
        lines += [f"mkdir -p {TOKEN_MOUNT}", f"mount --bind {shlex.quote(str(token_dir))} {TOKEN_MOUNT}"]
    roots = sorted({"/" + path.strip("/").split("/")[0] for path in plan.mounts})
    for root in roots:
        if root in ("/", "/tmp", "/dev", "/proc", "/usr", "/work"):
            raise UnsupportedSpec(f"volume mount under {root}: not supported by the stand-in")
        lines.append(f"mount -t tmpfs tmpfs {root}")
    for path, folder in sorted(plan.mounts.items()):
        lines += [f"mkdir -p {shlex.quote(path)}", f"mount --bind {shlex.quote(str(folder))} {shlex.quote(path)}"]
    return [*lines, f"mount --bind {shlex.quote(str(pod_tmp))} /tmp"]


class LocalRayCluster:
    """One running cluster: started by :meth:`start`, every process of it ended by :meth:`stop`."""

    def __init__(self, plan: ClusterPlan, workdir: Path):
        self.plan = plan
        self.id = uuid.uuid4().hex[:10]
        # Short: Ray's unix sockets live under it (107 characters at most).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tsk-", dir="/tmp"))
        self.workdir = workdir
        self.log = workdir / f"{plan.name}-{self.id}.log"
        self.pod_tmp = self.temp_dir / "tmp"
        for code in (REPO, Path(sys.prefix)):
            if code.resolve().is_relative_to("/tmp"):
                raise UnsupportedSpec(f"{code} is under /tmp, which the stand-in's pods replace with their own")

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.plan.ports['dashboard-port']}"

    def _token_dir(self) -> Path | None:
        identity = self.plan.identity
        if identity is None:
            return None
        folder = self.temp_dir / "serviceaccount"
        folder.mkdir()
        (folder / "token").write_text(identity.token)
        (folder / "namespace").write_text(identity.namespace)
        (folder / "ca.crt").write_bytes(identity.ca_file.read_bytes())
        return folder

    def environment(self) -> dict[str, str]:
        """The image's environment (this venv and checkout), then the container's, then the in-cluster API."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "KUBE", "TRAINSERVE_", "PYTEST"))}
        base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
        # The pod's own home (in its /tmp): Ray turns token auth on by itself when ~/.ray/auth_token exists.
        base["HOME"] = "/tmp/home"
        # The node's ports that are fixed in Ray Serve: free ones, as every cluster here shares one network.
        base |= {"RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
        paths = [REPO / "operator", REPO / "workloads", REPO]
        base["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
        env = base | self.plan.env | {POD_MARKER_ENV: self.id}
        if self.plan.identity is not None:
            env |= {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.plan.identity.api_port)}
        return env

    def start(self, timeout: float = 90) -> None:
        """``ray start --head`` with the head group's parameters (KubeRay's pod command, common/pod.go)."""
        params = self.plan.head_params | {
            "dashboard-host": "127.0.0.1",
            "node-ip-address": "127.0.0.1",
            "disable-usage-stats": "true",
            **{key: str(value) for key, value in self.plan.ports.items()},
        }
        flags = [f"--{key}" if value == "true" else f"--{key}={value}" for key, value in sorted(params.items())]
        (self.pod_tmp / "home").mkdir(parents=True, exist_ok=True)
        script = [
            *_mount_script(self.plan, self._token_dir(), self.pod_tmp),
            shlex.join(["exec", "ray", "start", "--head", *flags]),
        ]
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]
        with self.log.open("ab") as out:
            result = subprocess.run(
                command, env=self.environment(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        if result.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed for {self.plan.name} (exit {result.returncode}); see {self.log}")

    def pids(self) -> list[int]:
        marker = f"{POD_MARKER_ENV}={self.id}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (proc / "environ").read_bytes().split(b"\0"):
                        found.append(int(proc.name))
        return found

    def stop(self, grace: float = 5.0) -> None:
        """Ends every process of this cluster (and only those): SIGTERM, then SIGKILL after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        for logs in (self.pod_tmp / "ray").glob("session_2*/logs"):  # kept with the test's files, for post-mortems
            shutil.copytree(logs, self.workdir / f"{self.plan.name}-{self.id}-logs", dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
