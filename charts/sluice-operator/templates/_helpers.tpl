{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "sluice-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, plus the chart name unless the release
name already contains it. */}}
{{- define "sluice-operator.fullname" -}}
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

{{- define "sluice-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sluice-operator.labels" -}}
helm.sh/chart: {{ include "sluice-operator.chart" . }}
{{ include "sluice-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluice-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sluice-operator.brokerImage" -}}
{{- default (include "sluice-operator.image" .) .Values.brokerImage }}
{{- end }}

{{- define "sluice-operator.leaseName" -}}
{{- default (include "sluice-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The watched namespaces, de-duplicated, comma-separated; empty for cluster-wide. */}}
{{- define "sluice-operator.watchNamespaces" -}}
{{- .Values.watchNamespaces | uniq | join "," }}
{{- end }}

{{/* Rules on namespaced objects: what the reconcilers read and write. Shared by the ClusterRole
(cluster-wide) and by the Role in each watched namespace, so the two modes grant the same verbs.
Keep in step with what the operator calls. */}}
{{- define "sluice-operator.workloadRules" -}}
- apiGroups: ["kafka.sluice.dev"]
  resources: ["kafkaclusters", "kafkatopics"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["kafka.sluice.dev"]
  resources: ["kafkaclusters/status", "kafkatopics/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["kafka.sluice.dev"]
  resources: ["kafkaclusters/finalizers", "kafkatopics/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
