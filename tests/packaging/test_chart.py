"""The Helm chart, rendered by Helm's own engine: lint, every object valid for Kubernetes, every toggle
combination, the values schema, the CRDs, the operator pod's security and wiring, install.yaml."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import helm_python
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.packaging.chart import (
    CHART,
    NAMESPACE,
    REPO,
    chart_values,
    container,
    deploy_render,
    env,
    objects,
    of_kind,
    one,
    pod_spec,
    render,
)

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema we have.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
TOGGLES = ("serviceMonitor", "podMonitor", "prometheusRule", "dashboard", "networkPolicy")


def combination(enabled: tuple[bool, ...], namespaces: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {name: {"enabled": on} for name, on in zip(TOGGLES, enabled, strict=True)}
    values["watchNamespaces"] = namespaces
    return values


COMBINATIONS = [
    combination(enabled, namespaces)
    for enabled in itertools.product((False, True), repeat=len(TOGGLES))
    for namespaces in ([], ["team-a", "team-b"])
]
#: Other shapes worth validating on their own.
VARIANTS: dict[str, dict[str, Any]] = {
    "ha": {"replicaCount": 2},
    "standalone": {"peering": {"enabled": False}},
    "no-metrics": {"metrics": {"enabled": False}},
    "bring-your-own-account": {"serviceAccount": {"create": False, "name": "ops"}, "rbac": {"create": False}},
    "everything": {
        "replicaCount": 3,
        "watchNamespaces": ["ml"],
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
        "operator": {"verbose": True, "extraArgs": ["--metrics-port=9191"], "logFormat": "text"},
        "metrics": {"port": 9191, "service": {"annotations": {"prometheus.io/scrape": "true"}}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "trainserve"}},
            }
        ],
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "ml-platform"},
        "workloads": {
            "rayAuth": False,
            "network": {
                "kuberayNamespace": "ray-operators",
                "prometheusNamespace": "observability",
                "serveFrom": {"namespaceLabels": {"team": "web", "tier": "edge"}, "podLabels": {"app": "frontend"}},
            },
        },
        "commonLabels": {"cost-center": "ml"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "podMonitor": {"enabled": True, "namespaces": ["ml", "ml-serving"]},
        "prometheusRule": {"enabled": True, "alertLabels": {"team": "ml"}, "runbookUrlBase": "https://runbooks/"},
        "dashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "MLOps"}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "apiServer": {"cidrs": ["10.0.0.1/32"]},
        },
    },
}

_validated: set[str] = set()


def validate(obj: dict[str, Any]) -> None:
    """Strict schema validation for Kubernetes kinds (each distinct object once); a structural check for the
    Prometheus Operator kinds, which kubernetes-validate has no schema for."""
    key = json.dumps(obj, sort_keys=True)
    if key in _validated:
        return
    if obj["kind"] in MONITORING_KINDS:
        check_monitoring_object(obj)
    else:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    _validated.add(key)


def check_monitoring_object(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert obj["metadata"]["namespace"] and obj["metadata"]["labels"]
    spec = obj["spec"]
    duration = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}
        assert spec["selector"]["matchLabels"] and spec["endpoints"]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
            assert endpoint["port"] == "metrics" and duration.match(endpoint["interval"])
    elif obj["kind"] == "PodMonitor":
        assert set(spec) <= {"namespaceSelector", "selector", "podMetricsEndpoints", "jobLabel"}
        assert set(spec["namespaceSelector"]) in ({"any"}, {"matchNames"})
        for endpoint in spec["podMetricsEndpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
            assert duration.match(endpoint["interval"])
            for relabel in endpoint["relabelings"]:
                assert set(relabel) <= {"sourceLabels", "targetLabel", "regex", "replacement", "action", "separator"}
    else:  # PrometheusRule: promtool checks the groups fully (tests/packaging/test_alerts.py)
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) == {"name", "rules"}
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert rule["labels"]["severity"] in ("critical", "warning", "info")


# --- lint, schema, CRDs ---------------------------------------------------------------------------------------


def test_helm_lint_strict() -> None:
    result = helm_python.chart.lint(CHART, strict=True)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1 and "icon" not in m["error"]] == []


def test_values_yaml_matches_its_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(chart_values(), schema)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": "2"}, "/replicaCount"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicas": 2}, "replicas"),  # a typo of replicaCount
        ({"watchNamespaces": "ml"}, "/watchNamespaces"),
        ({"watchNamespaces": ["ML_Team"]}, "/watchNamespaces/0"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
        ({"operator": {"workers": 0}}, "/operator/workers"),
        ({"metrics": {"port": "9090"}}, "/metrics/port"),
        ({"metrics": {"enabled": "yes"}}, "/metrics/enabled"),
        ({"serviceMonitor": {"interval": 30}}, "/serviceMonitor/interval"),
        ({"prometheusRule": {"thresholds": {"serveErrorRatio": 5}}}, "/prometheusRule/thresholds/serveErrorRatio"),
        ({"prometheusRule": {"thresholds": {"operatorDownFor": "5 minutes"}}}, "operatorDownFor"),
        ({"workloads": {"head": {"memory": "lots"}}}, "/workloads/head/memory"),
        ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
        ({"networkPolicy": {"apiServer": {"cidrs": ["everywhere"]}}}, "/networkPolicy/apiServer/cidrs/0"),
        ({"nodeSelector": {"gpu": True}}, "/nodeSelector/gpu"),
    ],
)
def test_wrong_values_are_refused_at_install_time(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="schema") as refused:
        render(values)
    assert where in str(refused.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2, "peering": {"enabled": False}}, "needs peering.enabled"),
        ({"metrics": {"enabled": False}, "serviceMonitor": {"enabled": True}}, "needs metrics.enabled"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
)
def test_contradictory_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


def test_every_value_is_documented() -> None:
    """Each key of values.yaml that the schema declares has a comment right above it (free-form objects such as
    probes and security contexts are documented as a whole)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    path: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z0-9_.-]+):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        path = [(i, k) for i, k in path if i < indent] + [(indent, key)]
        node: dict[str, Any] | None = schema
        for _, part in path:
            if node is not None and node.get("additionalProperties") is not False:
                node = None  # inside a free-form object (a probe, a security context, resources)
                break
            node = ((node or {}).get("properties") or {}).get(part)
            if node is not None and "$ref" in node:
                node = schema["definitions"][node["$ref"].split("/")[-1]]
        if node is None:
            continue
        above = lines[index - 1].strip() if index else ""
        if not above.startswith("#"):
            undocumented.append(".".join(k for _, k in path))
    assert undocumented == []


def test_chart_crds_are_the_generated_crds_plus_kopf_peering() -> None:
    assert deploy_render().stale_crds() == [], "run `make manifests`"
    names = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    ours = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert names == sorted([*ours, "kopf.dev_clusterkopfpeerings.yaml", "kopf.dev_kopfpeerings.yaml"])
    for path in (CHART / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        validate(crd)
        if path.name.startswith("kopf.dev_"):
            version = crd["spec"]["versions"][0]
            assert version["name"] == "v1" and crd["spec"]["group"] == "kopf.dev"
            assert "subresources" not in version, "Kopf patches the peering status on the object itself"
            assert version["schema"]["openAPIV3Schema"]["properties"]["status"]["x-kubernetes-preserve-unknown-fields"]


# --- every object valid, for every combination -----------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    COMBINATIONS,
    ids=[
        ("+".join(n for n, v in zip(TOGGLES, c, strict=True) if v) or "none") + ("@ns" if ns else "@all")
        for c in itertools.product((False, True), repeat=len(TOGGLES))
        for ns in ([], [1])
    ],
)
def test_toggle_combinations_render_valid_objects(values: dict[str, Any]) -> None:
    rendered = objects(values)
    kinds = {obj["kind"] for obj in rendered}
    expected = {
        "ServiceMonitor": values["serviceMonitor"]["enabled"],
        "PodMonitor": values["podMonitor"]["enabled"],
        "PrometheusRule": values["prometheusRule"]["enabled"],
        "ConfigMap": values["dashboard"]["enabled"],
        "NetworkPolicy": values["networkPolicy"]["enabled"],
        "Role": bool(values["watchNamespaces"]),
    }
    for kind, wanted in expected.items():
        assert (kind in kinds) == wanted, kind
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"} <= kinds
    for obj in rendered:
        validate(obj)
        check_common_metadata(obj, values)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_render_valid_objects(variant: str) -> None:
    values = VARIANTS[variant]
    for obj in objects(values):
        validate(obj)
        check_common_metadata(obj, values)


def check_common_metadata(obj: dict[str, Any], values: dict[str, Any]) -> None:
    metadata = obj["metadata"]
    labels = metadata["labels"]
    assert labels["app.kubernetes.io/name"] == "trainserve" and labels["app.kubernetes.io/instance"] == "trainserve"
    assert labels["app.kubernetes.io/part-of"] == "trainserve" and labels["helm.sh/chart"] == "trainserve-0.1.0"
    for key, value in (values.get("commonLabels") or {}).items():
        assert labels[key] == value
    if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
        assert "namespace" not in metadata
    elif obj["kind"] in ("Role", "RoleBinding"):
        assert metadata["namespace"] in values["watchNamespaces"]
    elif obj["kind"] == "ConfigMap":
        assert metadata["namespace"] == ((values.get("dashboard") or {}).get("namespace") or NAMESPACE)
    else:
        assert metadata["namespace"] == NAMESPACE


# --- the operator pod ------------------------------------------------------------------------------------------


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The checks of the Kubernetes "restricted" Pod Security Standard (latest) that this pod fails."""
    out = []
    pod_context = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(field)
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod.get("volumes") or []:
        if not set(volume) - {"name"} <= allowed_volumes:
            out.append(f"volume {volume['name']}")
    for sysctl in pod_context.get("sysctls") or []:
        out.append(f"sysctl {sysctl['name']}")
    for section in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod.get(section) or []:
            ctx = c.get("securityContext") or {}
            name = c["name"]
            if ctx.get("privileged"):
                out.append(f"{name}: privileged")
            if ctx.get("allowPrivilegeEscalation") is not False:
                out.append(f"{name}: allowPrivilegeEscalation must be false")
            caps = ctx.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                out.append(f"{name}: capabilities must drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                out.append(f"{name}: capabilities added")
            if not ctx.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
                out.append(f"{name}: runAsNonRoot")
            if ctx.get("runAsUser", pod_context.get("runAsUser")) == 0:
                out.append(f"{name}: runAsUser 0")
            seccomp = (ctx.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                out.append(f"{name}: seccompProfile")
            if any(p.get("hostPort") for p in c.get("ports") or []):
                out.append(f"{name}: hostPort")
            if ctx.get("procMount", "Default") != "Default":
                out.append(f"{name}: procMount")
            if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
                out.append(f"{name}: AppArmor unconfined")
    return out


@pytest.mark.parametrize("variant", ["default", *VARIANTS])
def test_operator_pod_passes_the_restricted_pod_security_standard(variant: str) -> None:
    values = VARIANTS.get(variant, {})
    pod = pod_spec(values)
    assert restricted_violations(pod) == []
    ctx = container(values)["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container(values)["volumeMounts"]


def test_the_restricted_check_catches_violations() -> None:
    pod = pod_spec()
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    pod["containers"][0]["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    pod["securityContext"] = {"runAsUser": 0}
    found = restricted_violations(pod)
    for expected in ("hostNetwork", "volume host", "privileged", "drop ALL", "capabilities added", "runAsNonRoot"):
        assert any(expected in v for v in found), expected


def test_operator_runs_with_peering_probes_and_settings() -> None:
    c = container()
    assert c["image"] == "ghcr.io/trainserve/operator:0.1.0"
    assert c["args"] == ["--all-namespaces"]  # the image's entrypoint is `trainserve run`
    variables = env()
    assert variables["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # Kopf's peering identity
    assert variables["TRAINSERVE_PEERING_NAME"] == "trainserve"
    assert variables["TRAINSERVE_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8081/healthz"
    assert variables["TRAINSERVE_METRICS_PORT"] == "9090"
    assert variables["TRAINSERVE_IMAGE"] == "ghcr.io/trainserve/workloads:0.1.0"
    assert variables["TRAINSERVE_RAY_VERSION"] == "2.60.0"
    assert variables["TRAINSERVE_LOG_FORMAT"] == "json"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 8081}


def test_every_operator_variable_is_a_setting() -> None:
    """The chart sets only TRAINSERVE_* variables the operator reads (a renamed setting would be ignored)."""
    from trainserve.settings import _ENV_FIELDS, _ENV_LABELS, ENV_PREFIX

    known = {ENV_PREFIX + name for name in [*_ENV_FIELDS.values(), *_ENV_LABELS.values()]}
    chart = {name for name in env(VARIANTS["everything"]) if name.startswith(ENV_PREFIX)}
    assert chart - known == set()


def test_the_operator_accepts_the_chart_arguments() -> None:
    from trainserve.cli import build_parser

    for values in ({}, VARIANTS["everything"], VARIANTS["standalone"]):
        args = build_parser().parse_args(["run", *container(values)["args"]])
        assert args.command == "run"
    assert build_parser().parse_args(["run", *container(VARIANTS["everything"])["args"]]).namespace == ["ml"]
    assert build_parser().parse_args(["run", *container(VARIANTS["standalone"])["args"]]).standalone is True


def test_the_settings_follow_the_chart_environment() -> None:
    from trainserve.settings import settings_from

    variables = {k: v for k, v in env(VARIANTS["everything"]).items() if isinstance(v, str)}
    settings = settings_from(variables, namespaces=("ml",))
    assert settings.peering_name == "trainserve" and not settings.standalone
    assert settings.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert settings.metrics_port == 9191 and settings.log_format == "text"
    assert settings.image == "ghcr.io/trainserve/workloads:0.1.0"
    assert settings.ray_auth is False and settings.operator_namespace == NAMESPACE
    assert settings.kuberay_namespace == "ray-operators" and settings.prometheus_namespace == "observability"
    assert settings.serve_from_namespace_labels == {"team": "web", "tier": "edge"}
    assert settings.serve_from_pod_labels == {"app": "frontend"}
    defaults = settings_from({k: v for k, v in env().items() if isinstance(v, str)})
    assert defaults.ray_auth is True and defaults.kuberay_namespace == "kuberay-system"
    assert defaults.prometheus_namespace == "monitoring" and defaults.serve_from_namespace_labels == {}


def test_watch_namespaces_and_standalone_arguments() -> None:
    assert container({"watchNamespaces": ["a", "b"]})["args"] == ["--namespace=a", "--namespace=b"]
    assert container({"peering": {"enabled": False}})["args"] == ["--all-namespaces", "--standalone"]
    assert "TRAINSERVE_PEERING_NAME" not in env({"peering": {"enabled": False}})
    assert env({"peering": {"name": "team-a"}})["TRAINSERVE_PEERING_NAME"] == "team-a"


def test_image_tag_and_digest() -> None:
    assert container({"image": {"tag": "1.2.3"}})["image"] == "ghcr.io/trainserve/operator:1.2.3"
    digest = "sha256:" + "b" * 64
    assert container({"image": {"digest": digest}})["image"] == f"ghcr.io/trainserve/operator:0.1.0@{digest}"
    workload = env({"workloads": {"image": {"repository": "registry/ray", "tag": "0.1.0-gpu"}}})
    assert workload["TRAINSERVE_IMAGE"] == "registry/ray:0.1.0-gpu"


def test_high_availability() -> None:
    single = objects({})
    assert of_kind(single, "PodDisruptionBudget") == [] and "affinity" not in pod_spec({})
    ha = objects({"replicaCount": 2})
    deployment = one(ha, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pdb = one(ha, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod_spec({"replicaCount": 2})["affinity"]["podAntiAffinity"]
    assert of_kind(objects({"replicaCount": 2, "podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget") == []


def test_metrics_service_and_monitors_select_the_right_things() -> None:
    rendered = objects({"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}})
    service = one(rendered, "Service")
    deployment = one(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    pods = one(rendered, "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"any": True}
    assert pods["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "trainserve"}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    scoped = one(objects({"podMonitor": {"enabled": True}, "watchNamespaces": ["ml"]}), "PodMonitor")
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_metrics_can_be_turned_off() -> None:
    rendered = objects({"metrics": {"enabled": False}})
    assert of_kind(rendered, "Service") == []
    assert env({"metrics": {"enabled": False}})["TRAINSERVE_METRICS_PORT"] == "0"
    assert [p["name"] for p in container({"metrics": {"enabled": False}})["ports"]] == ["health"]


def test_network_policy() -> None:
    policy = one(objects(VARIANTS["everything"]), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert policy["ingress"][0]["from"] == VARIANTS["everything"]["networkPolicy"]["metricsFrom"]
    api = policy["egress"][0]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}] and {p["port"] for p in api["ports"]} == {443, 6443}
    ports = [p["port"] for rule in policy["egress"] for p in rule["ports"]]
    assert 53 in ports and 8000 in ports
    bare = one(objects({"networkPolicy": {"enabled": True, "dns": False, "servePort": 0}}), "NetworkPolicy")["spec"]
    assert len(bare["egress"]) == 1 and "to" not in bare["egress"][0] and "from" not in bare["ingress"][0]


def test_dashboard_configmap_holds_the_dashboard() -> None:
    configmap = one(objects({"dashboard": {"enabled": True}}), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["trainserve.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboards" / "trainserve.json").read_text())


def test_notes_tell_the_next_steps() -> None:
    notes = render({})["trainserve/templates/NOTES.txt"]
    assert "helm install kuberay-operator" in notes and "digits-trainingjob.yaml" in notes
    assert "ClusterKopfPeering" in notes
    namespaced = render({"watchNamespaces": ["a", "b"], "replicaCount": 2})["trainserve/templates/NOTES.txt"]
    assert "the namespaces a, b" in namespaced and "2 replica(s)" in namespaced and "KopfPeering" in namespaced


# --- deploy/install.yaml --------------------------------------------------------------------------------------


def test_install_yaml_is_a_fresh_render_of_the_default_values() -> None:
    current = (REPO / "deploy" / "install.yaml").read_text()
    assert current == deploy_render().install_manifest(), "deploy/install.yaml is stale: run `make manifests`"


def test_install_yaml_applies_in_order_and_validates() -> None:
    documents = [d for d in yaml.safe_load_all((REPO / "deploy" / "install.yaml").read_text()) if d]
    kinds = [d["kind"] for d in documents]
    assert kinds[0] == "Namespace"
    assert documents[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    last_crd = max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition")
    assert kinds.index("Deployment") > last_crd and kinds[-1] == "Deployment"
    crds = {d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"}
    assert crds == {
        "trainingjobs.trainserve.io",
        "modelservices.trainserve.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for document in documents:
        validate(document)
    assert (
        restricted_violations(next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]) == []
    )
