"""A process-level KubeRay for tests: runs the RayJobs and RayServices stored in the emulated API server with real
local Ray processes (tests/support/localray.py), and reports their status the way KubeRay v1 does.

- RayJob: a cluster from ``rayClusterSpec``, the ``entrypoint`` submitted with ``runtimeEnvYAML``,
  ``submissionId`` and ``metadata`` through the dashboard's Job Submission API (KubeRay's HTTP submission), then
  ``jobStatus``, ``jobDeploymentStatus``, ``reason``, ``message``, ``startTime``/``endTime``, ``jobId``,
  ``rayClusterName`` and ``dashboardURL`` mirrored; ``shutdownAfterJobFinishes``, ``activeDeadlineSeconds``,
  ``suspend`` and deletion honoured.
- RayService: a cluster from ``rayClusterConfig``, ``serveConfigV2`` PUT to ``/api/serve/applications/`` and
  PUT again in place when it changes; application and deployment statuses read back into
  ``activeServiceStatus`` and the ``Ready`` condition; Serve's HTTP port on a free loopback port
  (:meth:`KubeRayLocal.serve_url`).

Not reproduced: scheduling (pods, nodes, resources), the submitter Job, ``backoffLimit`` retries of the RayJob
itself, the autoscaler, the zero-downtime upgrade of a RayService (a changed ``rayClusterConfig`` restarts the
one cluster in place, with downtime), Services, probes, and GCS fault tolerance.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import secrets
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml

from tests.support.kubesim import NAMESPACE, RAYJOBS, RAYSERVICES, Emulator
from tests.support.localray import ClusterPlan, LocalRayCluster, PodIdentity, plan_cluster
from trainserve_workloads.lifecycle import free_port

log = logging.getLogger("tests.kuberay_local")
Object = dict[str, Any]
TERMINAL_JOB = {"SUCCEEDED", "FAILED", "STOPPED"}
POLL = 0.5


def _auth_secret_name(cluster: str) -> str:
    """utils.CheckName: at most 50 characters (the front is cut), starting with a letter."""
    name = cluster[-50:]
    return name if name[:1].isalpha() else "r" + name[1:]


def _with_token_env(spec: Object, secret: str) -> Object:
    """common/pod.go SetContainerTokenAuthEnvVars: RAY_AUTH_MODE and RAY_AUTH_TOKEN (from the Secret) on every
    group's Ray container, each only where the container does not set that name already."""
    spec = copy.deepcopy(spec)
    injected = [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "auth_token"}}},
    ]
    for group in [spec["headGroupSpec"], *(spec.get("workerGroupSpecs") or [])]:
        container = group["template"]["spec"]["containers"][0]
        env = container.setdefault("env", [])
        present = {variable["name"] for variable in env}
        env.extend(variable for variable in injected if variable["name"] not in present)
    return spec


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(millis: int | None) -> str | None:
    if not millis:
        return None
    return datetime.datetime.fromtimestamp(millis / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds_since(stamp: str) -> float:
    started = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - started).total_seconds()


class KubeRayLocal:
    """Watches RayJobs and RayServices (polling the emulator's store) and runs one task per object (by uid)."""

    def __init__(self, emulator: Emulator, workdir: Path, ca_file: Path, api_port: int):
        self.api, self.workdir, self.ca_file, self.api_port = emulator, workdir, ca_file, api_port
        self.volumes = workdir / "volumes"
        self.clusters: dict[str, LocalRayCluster] = {}
        #: Every cluster ever started, for the check that none left a process behind.
        self.started: list[LocalRayCluster] = []
        #: Each running cluster's Ray token (KubeRay keeps it in the Secret and sends it to the dashboard).
        self.tokens: dict[int, str | None] = {}
        self.serve_ports: dict[str, int] = {}
        self.errors: list[str] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Starts and stops under way: a cancelled caller must not leave one half done when the stand-in shuts down.
        self._starting: dict[int, asyncio.Future[None]] = {}
        self._stopping: list[asyncio.Future[None]] = []
        self._http: aiohttp.ClientSession | None = None

    # --- watching -------------------------------------------------------------------------------------------

    def live(self, resource: str) -> dict[str, Object]:
        return {
            name: obj.raw
            for (res, _, name), obj in list(self.api.objects.items())
            if str(res) == str(kmock.resource(resource)) and not obj.deleted
        }

    def current(self, resource: str, name: str, uid: str) -> Object | None:
        """The stored object while it is the same one (a re-created namesake is another object)."""
        obj = self.live(resource).get(name)
        return obj if obj is not None and obj["metadata"].get("uid") == uid else None

    async def run(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            while True:
                for resource, runner in ((RAYJOBS, self._run_rayjob), (RAYSERVICES, self._run_rayservice)):
                    for name, obj in self.live(resource).items():
                        uid = obj["metadata"]["uid"]
                        if uid not in self._tasks:
                            self._tasks[uid] = asyncio.create_task(self._guard(runner, name, uid))
                await asyncio.sleep(0.2)
        finally:
            await self.shutdown()

    async def _guard(self, runner: Callable[[str, str], Any], name: str, uid: str) -> None:
        try:
            await runner(name, uid)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.exception("stand-in KubeRay failed on %s", name)
            self.errors.append(f"{name}: {type(err).__name__}: {err}")
            with (self.workdir / "kuberay-errors.log").open("a") as out:
                out.write(traceback.format_exc())
        finally:
            await self._teardown(uid)

    async def shutdown(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task
        for uid in list(self.clusters):
            await self._teardown(uid)
        await asyncio.gather(*self._stopping, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # --- clusters -------------------------------------------------------------------------------------------

    def _identity(self, pod: Object) -> PodIdentity | None:
        """The head pod's ServiceAccount token, when the pod mounts one (one token per account)."""
        account = pod["spec"].get("serviceAccountName")
        if not account or not pod["spec"].get("automountServiceAccountToken", True):
            return None
        token = self.api.tokens.mint(NAMESPACE, account)
        return PodIdentity(token=token, namespace=NAMESPACE, ca_file=self.ca_file, api_port=self.api_port)

    async def _start_cluster(self, uid: str, name: str, spec: Object) -> LocalRayCluster:
        identity = self._identity(spec["headGroupSpec"]["template"])
        token = await self._auth_token(name) if (spec.get("authOptions") or {}).get("mode") == "token" else None
        if token is not None:
            spec = _with_token_env(spec, _auth_secret_name(name))
        plan: ClusterPlan = plan_cluster(name, spec, self.api.objects, NAMESPACE, self.volumes, identity)
        cluster = LocalRayCluster(plan, self.workdir)
        self.tokens[id(cluster)] = token
        self.clusters[uid] = cluster
        self.started.append(cluster)
        starting = asyncio.ensure_future(asyncio.to_thread(cluster.start))
        self._starting[id(cluster)] = starting
        await asyncio.shield(starting)
        return cluster

    async def _auth_token(self, cluster: str) -> str:
        """KubeRay's token Secret for the cluster (raycluster_controller.go createAuthSecret: ``auth_token``, 32
        random bytes base64-encoded, named after the RayCluster), created in the API; returns the token."""
        token = base64.b64encode(secrets.token_bytes(32)).decode()
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": _auth_secret_name(cluster), "labels": {"ray.io/cluster": cluster}},
            "data": {"auth_token": base64.b64encode(token.encode()).decode()},
        }
        async with self.api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", json=secret) as response:
            if response.status >= 300:
                raise RuntimeError(f"token Secret of {cluster}: {response.status} {await response.text()}")
        return token

    async def _teardown(self, uid: str) -> None:
        """Stops the cluster; the stop goes on (and :meth:`shutdown` waits for it) if the caller is cancelled, as
        when a test ends right after the job's terminal status and before its cluster is gone."""
        cluster = self.clusters.pop(uid, None)
        if cluster is not None:
            stopping = asyncio.ensure_future(self._stop_once_started(cluster))
            self._stopping.append(stopping)
            await asyncio.shield(stopping)

    async def _stop_once_started(self, cluster: LocalRayCluster) -> None:
        """A start under way ends first (its processes would outlive a stop that ran before they exist)."""
        starting = self._starting.pop(id(cluster), None)
        if starting is not None:
            await asyncio.gather(starting, return_exceptions=True)
        await asyncio.to_thread(cluster.stop)

    async def _patch_status(self, resource: str, name: str, status: Object) -> None:
        group_version, plural = resource.rsplit("/", 1)
        path = f"/apis/{group_version}/namespaces/{NAMESPACE}/{plural}/{name}/status"
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.api.request("PATCH", path, json={"status": status}, headers=headers) as response:
            if response.status >= 300:
                log.warning("status of %s: %s %s", name, response.status, await response.text())

    async def _dashboard(self, method: str, cluster: LocalRayCluster, path: str, body: Any = None) -> Any:
        assert self._http is not None
        token = self.tokens.get(id(cluster))
        # utils/dashboardclient: with token auth, KubeRay sends the cluster's token in this header.
        headers = {"x-ray-authorization": f"Bearer {token}"} if token else {}
        async with self._http.request(method, cluster.dashboard_url + path, json=body, headers=headers) as response:
            text = await response.text()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {text}")
            return json.loads(text) if text else None

    # --- RayJob (ray-operator/controllers/ray/rayjob_controller.go) ------------------------------------------

    async def _run_rayjob(self, name: str, uid: str) -> None:
        while True:
            obj = await self._until_unsuspended(name, uid)
            if obj is None:
                return
            outcome = await self._one_submission(name, uid, obj)
            if outcome != "suspended":
                return

    async def _until_unsuspended(self, name: str, uid: str) -> Object | None:
        reported = False
        while (obj := self.current(RAYJOBS, name, uid)) is not None:
            if not obj["spec"].get("suspend"):
                return obj
            if not reported:  # a suspended RayJob has no cluster (rayjob_controller.go JobDeploymentStatusSuspended)
                await self._patch_status(RAYJOBS, name, {"jobDeploymentStatus": "Suspended", "jobStatus": ""})
                reported = True
            await asyncio.sleep(POLL)
        return None

    async def _one_submission(self, name: str, uid: str, obj: Object) -> str:
        spec = obj["spec"]
        # initRayJobStatusIfNeed: jobId (utils.GenerateRayJobId), rayClusterName, startTime, Initializing.
        job_id = spec.get("jobId") or f"{name}-{secrets.token_hex(3)}"
        cluster_name = f"{name}-raycluster-{secrets.token_hex(3)}"
        started = _now()
        init = {"jobId": job_id, "rayClusterName": cluster_name, "startTime": started}
        await self._patch_status(RAYJOBS, name, init | {"jobDeploymentStatus": "Initializing", "jobStatus": ""})
        cluster = await self._start_cluster(uid, cluster_name, spec["rayClusterSpec"])
        # dashboardclient.ConvertRayJobToReq + SubmitJobReq: POST /api/jobs/ with the RayJob's fields.
        request: Object = {"entrypoint": spec["entrypoint"], "submission_id": job_id}
        if spec.get("runtimeEnvYAML"):
            request["runtime_env"] = yaml.safe_load(spec["runtimeEnvYAML"])
        if spec.get("metadata"):
            request["metadata"] = spec["metadata"]
        await self._dashboard("POST", cluster, "/api/jobs/", request)
        running = {"jobDeploymentStatus": "Running", "dashboardURL": cluster.dashboard_url.removeprefix("http://")}
        await self._patch_status(RAYJOBS, name, running)
        return await self._follow_job(name, uid, cluster, job_id, started)

    async def _follow_job(self, name: str, uid: str, cluster: LocalRayCluster, job_id: str, started: str) -> str:
        last: Object = {}
        while (obj := self.current(RAYJOBS, name, uid)) is not None:
            spec = obj["spec"]
            if spec.get("suspend"):  # updateStatusToSuspendingIfNeeded, then the cluster is deleted
                await self._stop_job(cluster, job_id)
                await self._teardown(uid)
                await self._patch_status(RAYJOBS, name, {"jobDeploymentStatus": "Suspending"})
                return "suspended"
            deadline = spec.get("activeDeadlineSeconds")
            if (
                deadline is not None and _seconds_since(started) > deadline
            ):  # checkActiveDeadlineAndUpdateStatusIfNeeded
                await self._stop_job(cluster, job_id)
                message = f"The RayJob has passed the activeDeadlineSeconds. StartTime: {started}. ActiveDeadlineSeconds: {deadline}"
                failed = {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": message}
                await self._patch_status(RAYJOBS, name, failed | {"endTime": _now()})
                await self._teardown(uid)
                return "failed"
            info = await self._dashboard("GET", cluster, f"/api/jobs/{job_id}")
            status = self._mirrored(info)
            if status != last:
                await self._patch_status(RAYJOBS, name, status)
                last = status
            if info["status"] in TERMINAL_JOB:
                if spec.get("shutdownAfterJobFinishes"):  # handleShutdownAfterJobFinishes (ttlSecondsAfterFinished 0)
                    await self._teardown(uid)
                return "finished"
            await asyncio.sleep(POLL)
        await self._stop_job(cluster, job_id)  # deleted: KubeRay's finalizer stops the job, GC takes the cluster
        return "deleted"

    @staticmethod
    def _mirrored(info: Object) -> Object:
        """rayjob_controller.go (JobDeploymentStatusRunning): a terminal job makes the RayJob Complete or Failed."""
        job_status = info["status"]
        deployment = "Running"
        reason = None
        if job_status in TERMINAL_JOB:
            deployment = "Failed" if job_status == "FAILED" else "Complete"
            reason = "AppFailed" if job_status == "FAILED" else None
        status: Object = {"jobStatus": job_status, "jobDeploymentStatus": deployment, "message": info.get("message")}
        if reason:
            status["reason"] = reason
        for field, key in (("startTime", "start_time"), ("endTime", "end_time")):
            if _time(info.get(key)):
                status[field] = _time(info.get(key))
        return status

    async def _stop_job(self, cluster: LocalRayCluster, job_id: str) -> None:
        with contextlib.suppress(Exception):  # dashboardclient StopJob: POST /api/jobs/<id>/stop
            await self._dashboard("POST", cluster, f"/api/jobs/{job_id}/stop")

    # --- RayService (ray-operator/controllers/ray/rayservice_controller.go) ----------------------------------

    def serve_url(self, name: str) -> str:
        """Where the RayService's Serve HTTP port (8000 in the pod) is reachable from the test."""
        return f"http://127.0.0.1:{self.serve_ports[name]}"

    async def _run_rayservice(self, name: str, uid: str) -> None:
        cluster: LocalRayCluster | None = None
        cluster_digest, applied = "", ""
        last: Object = {}
        while (obj := self.current(RAYSERVICES, name, uid)) is not None:
            config = obj["spec"]["rayClusterConfig"]
            digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
            if cluster is None or digest != cluster_digest:  # not zero-downtime: the one cluster is replaced
                await self._teardown(uid)
                cluster = await self._start_cluster(uid, f"{name}-raycluster-{secrets.token_hex(3)}", config)
                cluster_digest, applied = digest, ""
            apps = await self._serve_statuses(cluster)
            # checkIfNeedSubmitServeApplications: nothing cached, no application, or a changed serveConfigV2.
            if obj["spec"]["serveConfigV2"] != applied or not apps:
                try:
                    await self._apply_serve_config(name, cluster, obj["spec"]["serveConfigV2"])
                except RuntimeError as refused:
                    # KubeRay's reconcile returns the dashboard's error and is requeued (ServiceDefaultRequeueDuration):
                    # the PUT is tried again, e.g. after Serve's controller replaced a proxy that started too slowly.
                    log.warning("serve config of %s not applied, trying again: %s", name, str(refused)[:500])
                    await asyncio.sleep(POLL)
                    continue
                applied = obj["spec"]["serveConfigV2"]
                apps = await self._serve_statuses(cluster)
            status = self._service_status(obj, cluster, apps)
            if status != last:
                await self._patch_status(RAYSERVICES, name, status)
                last = status
            await asyncio.sleep(POLL)

    async def _apply_serve_config(self, name: str, cluster: LocalRayCluster, serve_config_v2: str) -> None:
        """updateServeDeployment: the YAML as JSON, PUT to /api/serve/applications/ (dashboardclient.UpdateDeployments).
        The HTTP options bind a free loopback port: every cluster here shares one network."""
        config = yaml.safe_load(serve_config_v2)
        port = self.serve_ports.setdefault(name, free_port())
        config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
        await self._dashboard("PUT", cluster, "/api/serve/applications/", config)

    async def _serve_statuses(self, cluster: LocalRayCluster) -> Object:
        """getAndCheckServeStatus: GET /api/serve/applications/, each application with its deployments."""
        details = await self._dashboard("GET", cluster, "/api/serve/applications/")
        out: Object = {}
        for app_name, app in ((details or {}).get("applications") or {}).items():
            deployments = {
                d_name: {"status": d.get("status", ""), "message": d.get("message", "")}
                for d_name, d in (app.get("deployments") or {}).items()
            }
            out[app_name or "default"] = {
                "status": app.get("status", ""),
                "message": app.get("message", ""),
                "serveDeploymentStatuses": deployments,
            }
        return out

    def _service_status(self, obj: Object, cluster: LocalRayCluster, apps: Object) -> Object:
        ready = bool(apps) and all(app["status"] == "RUNNING" for app in apps.values())
        replicas = sum(int(g.get("replicas", 1)) for g in obj["spec"]["rayClusterConfig"].get("workerGroupSpecs", []))
        reason, message = ("NonZeroServeEndpoints", "Number of serve endpoints is greater than 0")
        if not ready:
            reason, message = ("RayServiceInitializing", "the Serve applications are not running yet")
        return {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "serviceStatus": "Running" if ready else "",
            "conditions": [{"type": "Ready", "status": str(ready), "reason": reason, "message": message}],
            "activeServiceStatus": {
                "applicationStatuses": apps,
                "rayClusterName": cluster.plan.name,
                "rayClusterStatus": {"readyWorkerReplicas": replicas, "desiredWorkerReplicas": replicas},
            },
        }
