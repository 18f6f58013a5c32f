{{/*
Container resources from {"cpu": <qty>, "memory": <qty>, "ephemeralStorage": <qty>}: the
request is the limit for memory and ephemeral storage (a JVM sized to its container must not be
OOM-killed for using what it was told it has); CPU is requested, and limited only when
`cpuLimit` is given (a CPU limit throttles a JVM's GC and checkpoint threads).
*/}}
{{- define "gridstream-lib.resources" -}}
requests:
  cpu: {{ .cpu | quote }}
  memory: {{ .memory | quote }}
  {{- with .ephemeralStorage }}
  ephemeral-storage: {{ . | quote }}
  {{- end }}
limits:
  {{- with .cpuLimit }}
  cpu: {{ . | quote }}
  {{- end }}
  memory: {{ .memory | quote }}
  {{- with .ephemeralStorage }}
  ephemeral-storage: {{ . | quote }}
  {{- end }}
{{- end -}}

{{/*
The same resources as a FlinkDeployment's `jobManager.resource` / `taskManager.resource` (the
operator's 1.15 CRD spells it singular): `cpu` a number, `memory` in Flink's unit (MiB, "m").
Takes {"cpu": <number>, "memoryMiB": <int>, "ephemeralStorage": <qty>}.
*/}}
{{- define "gridstream-lib.flinkResource" -}}
cpu: {{ .cpu }}
memory: {{ printf "%dm" (int .memoryMiB) | quote }}
{{- with .ephemeralStorage }}
ephemeralStorage: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Kubernetes container resources for a Flink process sized by `gridstream-lib.flinkResource`'s dict. */}}
{{- define "gridstream-lib.flinkContainerResources" -}}
{{- include "gridstream-lib.resources" (dict "cpu" (toString .cpu) "memory" (printf "%dMi" (int .memoryMiB)) "ephemeralStorage" .ephemeralStorage) -}}
{{- end -}}
