"""``trainserve logs``: the driver output of a TrainingJob's attempt, or a ModelService replica's log, found by labels
and read over the Kubernetes API (the user's own kubeconfig and permissions).

Which pod:
- ``tj/NAME``: the attempt's RayJob is ``NAME-<attempt>``. KubeRay runs ``ray job submit`` in a Kubernetes Job named
  like the RayJob (ray-operator/controllers/ray/rayjob_controller.go ``createNewK8sJob``), which tails the driver's
  output; the Job controller labels its pods ``batch.kubernetes.io/job-name`` (``job-name`` before Kubernetes 1.27).
  The newest such pod is the driver's. Without one (not submitted yet, or ``HTTPMode``) the head pod of the
  attempt's RayCluster (KubeRay names it ``<rayjob>-<suffix>`` and labels its pods ``ray.io/cluster``) is shown.
  ``--worker K`` picks the K-th worker pod (by name, from 0) of that cluster.
- ``ms/NAME``: the Serve replicas run in the worker pods (``trainserve.io/modelservice=NAME``,
  ``ray.io/node-type=worker``): ``--worker K`` (default 0); the head pod when there is no worker.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import IO, Any

from trainserve.builders.raypod import HEAD_CONTAINER, WORKER_CONTAINER
from trainserve.naming import MODELSERVICE_LABEL, TRAININGJOB_LABEL, rayjob_name

Object = dict[str, Any]
KINDS = {
    "tj": "TrainingJob",
    "trainingjob": "TrainingJob",
    "trainingjobs": "TrainingJob",
    "ms": "ModelService",
    "modelservice": "ModelService",
    "modelservices": "ModelService",
}
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


class LogsError(Exception):
    """What cannot be shown, and what to do about it."""


@dataclass(frozen=True)
class LogSource:
    pod: str
    container: str | None
    note: str = ""


def parse_target(target: str) -> tuple[str, str]:
    """``tj/digits`` -> (``TrainingJob``, ``digits``)."""
    kind, _, name = target.partition("/")
    if kind.lower() not in KINDS or not name:
        raise LogsError(f"{target!r}: give tj/NAME (a TrainingJob) or ms/NAME (a ModelService)")
    return KINDS[kind.lower()], name


def _name(pod: Object) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def _labels(pod: Object) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("labels") or {})


def _first_container(pod: Object) -> str | None:
    containers = (pod.get("spec") or {}).get("containers") or []
    return str(containers[0]["name"]) if containers else None


def pick_worker(workers: list[Object], index: int, what: str) -> LogSource:
    ordered = sorted(workers, key=_name)
    if not 0 <= index < len(ordered):
        names = ", ".join(f"{i}: {_name(p)}" for i, p in enumerate(ordered)) or "none yet"
        raise LogsError(f"{what} has no worker {index}; its worker pods are {names}")
    return LogSource(_name(ordered[index]), WORKER_CONTAINER)


def trainingjob_source(name: str, attempt: int, pods: list[Object], worker: int | None) -> LogSource:
    """The pod of an attempt to read, from the job's pods and the submitter pods of its RayJob."""
    rayjob = rayjob_name(name, attempt)
    ours = [p for p in pods if str(_labels(p).get("ray.io/cluster", "")).startswith(f"{rayjob}-")]
    if worker is not None:
        return pick_worker([p for p in ours if _labels(p).get("ray.io/node-type") == "worker"], worker, rayjob)
    submitters = [p for p in pods if any(_labels(p).get(label) == rayjob for label in JOB_NAME_LABELS)]
    if submitters:
        newest = max(submitters, key=lambda p: (str((p.get("metadata") or {}).get("creationTimestamp")), _name(p)))
        return LogSource(_name(newest), _first_container(newest))
    heads = sorted((p for p in ours if _labels(p).get("ray.io/node-type") == "head"), key=_name)
    if not heads:
        raise LogsError(f"attempt {attempt} (RayJob {rayjob}) has no pods yet; see `kubectl describe tj {name}`")
    note = f"RayJob {rayjob} has no submitter pod (yet); showing its head pod, where Ray runs"
    return LogSource(_name(heads[-1]), HEAD_CONTAINER, note)


def modelservice_source(name: str, pods: list[Object], worker: int | None) -> LogSource:
    workers = [p for p in pods if _labels(p).get("ray.io/node-type") == "worker"]
    if workers or worker is not None:
        return pick_worker(workers, worker or 0, f"ModelService {name}")
    heads = sorted((p for p in pods if _labels(p).get("ray.io/node-type") == "head"), key=_name)
    if not heads:
        raise LogsError(f"ModelService {name} has no Ray pods yet; see `kubectl describe ms {name}`")
    return LogSource(_name(heads[-1]), HEAD_CONTAINER, f"ModelService {name} has no worker pod; showing its head pod")


class PodLogs:
    """The reads ``trainserve logs`` makes, over the ``kubernetes`` client."""

    def __init__(self, api_client: Any, namespace: str):
        import kubernetes  # type: ignore[import-untyped]

        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.namespace = namespace

    def _pods(self, selector: str) -> list[Object]:
        answer = self.core.list_namespaced_pod(self.namespace, label_selector=selector, _preload_content=False)
        items: list[Object] = json.loads(answer.data).get("items") or []
        return items

    def _attempt(self, name: str) -> int:
        from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

        try:
            job = self.custom.get_namespaced_custom_object(
                "trainserve.io", "v1alpha1", self.namespace, "trainingjobs", name
            )
        except ApiException as err:
            if err.status == 404:
                raise LogsError(f"TrainingJob {name} not found in namespace {self.namespace}") from None
            raise
        attempts = (job.get("status") or {}).get("attempts")
        if not attempts:
            raise LogsError(f"TrainingJob {name} has not started an attempt yet; see `kubectl describe tj {name}`")
        return int(attempts)

    def source(self, kind: str, name: str, attempt: int | None, worker: int | None) -> LogSource:
        if kind == "ModelService":
            if attempt is not None:
                raise LogsError("--attempt is for TrainingJobs; a ModelService has replicas (--worker K)")
            return modelservice_source(name, self._pods(f"{MODELSERVICE_LABEL}={name}"), worker)
        attempt = attempt if attempt is not None else self._attempt(name)
        pods = self._pods(f"{TRAININGJOB_LABEL}={name}")
        if worker is None:
            rayjob = rayjob_name(name, attempt)
            pods += [p for label in JOB_NAME_LABELS for p in self._pods(f"{label}={rayjob}")]
        return trainingjob_source(name, attempt, pods, worker)

    def copy(self, source: LogSource, follow: bool, out: IO[bytes]) -> None:
        """The log to ``out`` as it comes (with ``follow`` until the container stops or Ctrl-C)."""
        response = self.core.read_namespaced_pod_log(
            source.pod, self.namespace, container=source.container, follow=follow, _preload_content=False
        )
        try:
            for chunk in response.stream(64 * 1024, decode_content=True):
                out.write(chunk)
                out.flush()
        finally:
            response.release_conn()


def run_logs(target: str, namespace: str | None, attempt: int | None, worker: int | None, follow: bool) -> int:
    """``trainserve logs``: 0 once the log is copied, 1 with a message when there is nothing to show."""
    try:
        import kubernetes
        from kubernetes.client.exceptions import ApiException
    except ImportError:
        print("trainserve logs needs the Kubernetes client: pip install 'trainserve[operator]'", file=sys.stderr)
        return 1
    try:
        kind, name = parse_target(target)
        config, context_namespace = _client_configuration(kubernetes)
        logs = PodLogs(kubernetes.client.ApiClient(config), namespace or context_namespace or "default")
        source = logs.source(kind, name, attempt, worker)
        if source.note:
            print(source.note, file=sys.stderr)
        logs.copy(source, follow, sys.stdout.buffer)
    except (LogsError, kubernetes.config.ConfigException) as err:
        print(f"trainserve logs: {err}", file=sys.stderr)
        return 1
    except ApiException as err:
        print(f"trainserve logs: the API server answered {err.status} {err.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _client_configuration(kubernetes: Any) -> tuple[Any, str | None]:
    """In a pod its ServiceAccount; else the kubeconfig as kubectl finds it (``$KUBECONFIG``, read now: the client
    reads it once at import) with its context's namespace."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
        return config, None
    except kubernetes.config.ConfigException:
        pass
    path = os.environ.get("KUBECONFIG") or "~/.kube/config"
    kubernetes.config.load_kube_config(config_file=path, client_configuration=config)
    _, context = kubernetes.config.list_kube_config_contexts(config_file=path)
    return config, (context or {}).get("context", {}).get("namespace")
