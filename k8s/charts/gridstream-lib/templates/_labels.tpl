{{/*
Names and labels. Every helper takes the application chart's root context as `.`, or a dict
{"ctx": <root>, "component": <name>} where it names a component.
*/}}

{{- define "gridstream-lib.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix for every object's name: `<release>` when it already says the chart's name. */}}
{{- define "gridstream-lib.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "gridstream-lib.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels that select a component's pods: stable across upgrades (never the version). */}}
{{- define "gridstream-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gridstream-lib.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Every object's labels: the selector labels, the version, who manages it. */}}
{{- define "gridstream-lib.labels" -}}
{{ include "gridstream-lib.selectorLabels" . }}
app.kubernetes.io/part-of: gridstream
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}
