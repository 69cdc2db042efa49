{{/* Names ---------------------------------------------------------------------------------------------- */}}

{{- define "trainserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trainserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "trainserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trainserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trainserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trainserve.peeringName" -}}
{{- default (include "trainserve.fullname" .) .Values.peering.name }}
{{- end }}

{{- define "trainserve.metricsServiceName" -}}
{{- printf "%s-metrics" (include "trainserve.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* Labels --------------------------------------------------------------------------------------------- */}}

{{- define "trainserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trainserve.labels" -}}
helm.sh/chart: {{ include "trainserve.chart" . }}
{{ include "trainserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainserve
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Images --------------------------------------------------------------------------------------------- */}}

{{- define "trainserve.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "trainserve.workloadImage" -}}
{{- printf "%s:%s" .Values.workloads.image.repository (default .Chart.AppVersion .Values.workloads.image.tag) }}
{{- end }}

{{/* RBAC -----------------------------------------------------------------------------------------------
Exactly the API calls the operator makes (tests/packaging/test_rbac.py records them from the running operator
and fails on a missing or an unused grant). No wildcards. */}}

{{/* Cluster-scoped reads, needed in both modes: Kopf discovers the served resources through CRD events. */}}
{{- define "trainserve.rules.cluster" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
# KubeRay's CRDs are read to see whether they know `authOptions` (Ray token authentication).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  resourceNames: [rayjobs.ray.io, rayservices.ray.io]
  verbs: [get]
{{- end }}

{{/* Cluster-scoped reads of a namespaced operator: Kopf follows the listed namespaces as they come and go. */}}
{{- define "trainserve.rules.clusterForNamespaced" -}}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}

{{/* Namespaced rules: in a ClusterRole (all namespaces) or a Role per watched namespace. */}}
{{- define "trainserve.rules.namespaced" -}}
# TrainingJobs: Kopf lists and watches them; the operator reads one before creating its children (is it still
# there?) and writes only their status.
- apiGroups: [trainserve.io]
  resources: [trainingjobs]
  verbs: [get, list, watch]
# `patch` writes the status. `get` is never called: it is held because the operator creates a per-job Role
# granting get+patch on `trainingjobs/status` to the job's head pod, and Kubernetes refuses a Role that grants
# more than its creator holds (no `escalate` needed).
- apiGroups: [trainserve.io]
  resources: [trainingjobs/status]
  verbs: [get, patch]
# One RayJob per attempt: created, suspended/resumed (patch), deleted (deadline, TTL); `get` after a 409.
- apiGroups: [ray.io]
  resources: [rayjobs]
  verbs: [create, delete, get, list, patch, watch]
# The per-job identity that lets a training run patch its own TrainingJob's status (and the job's NetworkPolicy,
# below): read first (is it this job's, or a deleted namesake's?), created when missing, deleted after the TTL.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create, delete, get]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, delete, get]
# ModelServices: Kopf lists and watches them; the operator reads one before creating its RayService (is it
# still there?) and writes only their status.
- apiGroups: [trainserve.io]
  resources: [modelservices]
  verbs: [get, list, watch]
- apiGroups: [trainserve.io]
  resources: [modelservices/status]
  verbs: [patch]
# One RayService per ModelService: created (`get` after a 409), updated in place; deleted by its owner reference.
- apiGroups: [ray.io]
  resources: [rayservices]
  verbs: [create, get, list, patch, watch]
# One NetworkPolicy per TrainingJob and per ModelService, limiting who reaches their Ray pods: a job's is read and
# created like its access objects and deleted after the TTL; a service's is watched and patched back when it
# differs from what the settings say.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, delete, get, list, patch, watch]
# Events on condition transitions (Kopf's own event posting is off); KubeRay's Warning Events on its objects are
# listed and watched (field-selected: involvedObject.apiVersion=ray.io/v1, type=Warning) for refused pod creates.
- apiGroups: [""]
  resources: [events]
  verbs: [create, list, watch]
# The Ray pods and RayClusters of our jobs and services, listed and watched (label-selected:
# app.kubernetes.io/managed-by=trainserve) to tell why one is stuck: unschedulable, image pulls, crashes.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [ray.io]
  resources: [rayclusters]
  verbs: [list, watch]
{{- end }}

{{/* Kopf peering (leader election); the operator creates its peering object at start-up. */}}
{{- define "trainserve.rules.peering" -}}
{{- if .Values.peering.enabled -}}
- apiGroups: [kopf.dev]
  resources: [{{ if .Values.watchNamespaces }}kopfpeerings{{ else }}clusterkopfpeerings{{ end }}]
  verbs: [create, list, patch, watch]
{{- end }}
{{- end }}

{{/* Monitoring ----------------------------------------------------------------------------------------- */}}

{{/* PromQL label matchers selecting this operator's own series. */}}
{{- define "trainserve.operatorSelector" -}}
{{- if .Values.prometheusRule.operatorSelector }}
{{- .Values.prometheusRule.operatorSelector }}
{{- else }}
{{- printf "job=\"%s\", namespace=\"%s\"" (include "trainserve.metricsServiceName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Namespaces where the Ray pods live: explicit, the watched ones, or all (empty list). */}}
{{- define "trainserve.workloadNamespaces" -}}
{{- toJson (default .Values.watchNamespaces .Values.podMonitor.namespaces) }}
{{- end }}

{{/* A label map as `key=value,key=value` (sorted), the form TRAINSERVE_SERVE_FROM_*_LABELS take. */}}
{{- define "trainserve.labelList" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
