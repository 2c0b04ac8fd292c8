{{/* The chart name, or nameOverride. */}}
{{- define "tcpie.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full resource name: release-chart, unless the release name already holds it. */}}
{{- define "tcpie.fullname" -}}
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

{{- define "tcpie.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "tcpie.labels" -}}
helm.sh/chart: {{ include "tcpie.chart" . }}
{{ include "tcpie.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tcpie
{{- end }}

{{/* Selector labels: name and instance only, so they never change on upgrade. */}}
{{- define "tcpie.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tcpie.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tcpie.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tcpie.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tcpie.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The PromQL selector of this release's pods, for autoscaling queries. */}}
{{- define "tcpie.promSelector" -}}
namespace="{{ .Release.Namespace }}", service="{{ include "tcpie.fullname" . }}"
{{- end }}

{{/* Refuses settings that cannot work together. */}}
{{- define "tcpie.validate" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are mutually exclusive: KEDA creates its own HPA. Enable one." }}
{{- end }}
{{- $needed := add (mul .Values.preStopSleepSeconds 1000) .Values.tcpie.shutdownDelayMs .Values.tcpie.shutdownTimeoutMs }}
{{- if le (mul .Values.terminationGracePeriodSeconds 1000) (int64 $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v s) must exceed preStopSleepSeconds + (tcpie.shutdownDelayMs + tcpie.shutdownTimeoutMs) / 1000 = %v ms, or pods are killed mid-drain" .Values.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- end }}
