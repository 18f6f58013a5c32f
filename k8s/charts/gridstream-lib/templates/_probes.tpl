{{/*
Probes from {"http": {"path": <path>, "port": <port>}} or {"tcp": {"port": <port>}}, with
`startupSeconds` (how long start-up may take before liveness counts), `periodSeconds` and
`failureThreshold`. A startup probe holds liveness off while a JVM and its embedded Python
start; liveness then restarts a container that stopped answering; readiness gates traffic.
*/}}
{{- define "gridstream-lib.probeAction" -}}
{{- if .http -}}
httpGet:
  path: {{ .http.path }}
  port: {{ .http.port }}
{{- else if .tcp -}}
tcpSocket:
  port: {{ .tcp.port }}
{{- else -}}
{{- fail "gridstream-lib.probes: give `http` (path, port) or `tcp` (port)" -}}
{{- end -}}
{{- end -}}

{{- define "gridstream-lib.probes" -}}
{{- $period := .periodSeconds | default 10 -}}
{{- $failures := .failureThreshold | default 3 -}}
startupProbe:
  {{- include "gridstream-lib.probeAction" . | nindent 2 }}
  periodSeconds: 5
  failureThreshold: {{ div (.startupSeconds | default 120) 5 }}
livenessProbe:
  {{- include "gridstream-lib.probeAction" . | nindent 2 }}
  periodSeconds: {{ $period }}
  timeoutSeconds: 5
  failureThreshold: {{ $failures }}
readinessProbe:
  {{- include "gridstream-lib.probeAction" . | nindent 2 }}
  periodSeconds: {{ $period }}
  timeoutSeconds: 5
  failureThreshold: {{ $failures }}
{{- end -}}
