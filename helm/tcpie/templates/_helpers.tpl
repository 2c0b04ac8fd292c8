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

{{/* Labels on every resource: the chart's own, then commonLabels. */}}
{{- define "tcpie.labels" -}}
helm.sh/chart: {{ include "tcpie.chart" . }}
{{ include "tcpie.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tcpie
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
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

{{/* registry/repository:tag, or @digest when a digest is given (it wins over the tag). */}}
{{- define "tcpie.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The PromQL selector of this release's pods, for autoscaling queries. */}}
{{- define "tcpie.promSelector" -}}
namespace="{{ .Release.Namespace }}", service="{{ include "tcpie.fullname" . }}"
{{- end }}

{{/* The port of a URL (a dict of url and the scheme's default port), for egress rules. */}}
{{- define "tcpie.urlPort" -}}
{{- $host := (urlParse .url).host }}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $host) }}
{{- $port | default .default }}
{{- end }}

{{/* The fleet size until Redis is first reached: redis.expectedPods, else the pods the
     chart starts with (the autoscaler's minimum when there is one). */}}
{{- define "tcpie.expectedPods" -}}
{{- if gt (int64 .Values.redis.expectedPods) 0 }}
{{- .Values.redis.expectedPods | int64 }}
{{- else if .Values.autoscaling.hpa.enabled }}
{{- .Values.autoscaling.hpa.minReplicas | int64 }}
{{- else if .Values.autoscaling.keda.enabled }}
{{- .Values.autoscaling.keda.minReplicas | int64 }}
{{- else }}
{{- max 1 (int64 .Values.replicaCount) }}
{{- end }}
{{- end }}

{{/* The name the fleet's limits are kept under in Redis: redis.rateLimitName, else the
     release's namespace and full name, so two releases sharing a Redis never share a limit. */}}
{{- define "tcpie.rateLimitName" -}}
{{- .Values.redis.rateLimitName | default (printf "%s.%s" .Release.Namespace (include "tcpie.fullname" .) | trunc 100) }}
{{- end }}

{{/* Refuses settings that cannot work together. */}}
{{- define "tcpie.validate" -}}
{{- if and .Values.autoscaling.keda.enabled (not .Values.metrics.serviceMonitor.enabled) }}
{{- fail "autoscaling.keda.enabled needs metrics.serviceMonitor.enabled: KEDA's query selects on the service label a ServiceMonitor scrape adds, and without it the autoscaler would stay at its minimum without a word." }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.hpa.saturation.enabled (not .Values.metrics.prometheusRule.enabled) }}
{{- fail "autoscaling.hpa.saturation.enabled needs metrics.prometheusRule.enabled: the busy-worker ratio the Prometheus adapter serves is the chart's recording rule tcpie:workers_busy:ratio." }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)." }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are mutually exclusive: KEDA creates its own HPA. Enable one." }}
{{- end }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]*@" .Values.redis.url }}
{{- fail "redis.url holds a password, which would sit in a ConfigMap anyone who can read ConfigMaps can read: put it in a Secret and name it in redis.existingSecret (and redis.existingSecretPasswordKey)." }}
{{- end }}
{{- if and .Values.redis.existingSecret (not .Values.redis.url) }}
{{- fail "redis.existingSecret is set but redis.url is empty: the password is for the Redis the fleet's limits live in; set redis.url too." }}
{{- end }}
{{- $needed := add (mul (int64 .Values.preStopSleepSeconds) 1000) (int64 .Values.tcpie.shutdownDelayMs) (int64 .Values.tcpie.shutdownTimeoutMs) }}
{{- if le (mul (int64 .Values.terminationGracePeriodSeconds) 1000) (int64 $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v s) must exceed preStopSleepSeconds + (tcpie.shutdownDelayMs + tcpie.shutdownTimeoutMs) / 1000 = %v ms, or pods are killed mid-drain" .Values.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- end }}
