{{/*
The hardened security context, the same for every GridStream pod. The image's user (the Flink
image's `flink`, uid and gid 9999) is named by number so `runAsNonRoot` can be checked by the
kubelet before the container starts. Each helper takes the `securityContext` values
({"user": 9999, "group": 9999}) or nothing for the defaults.
*/}}

{{- define "gridstream-lib.podSecurityContext" -}}
{{- $user := .user | default 9999 -}}
{{- $group := .group | default 9999 -}}
runAsNonRoot: true
runAsUser: {{ $user }}
runAsGroup: {{ $group }}
fsGroup: {{ $group }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gridstream-lib.containerSecurityContext" -}}
{{- $user := .user | default 9999 -}}
{{- $group := .group | default 9999 -}}
runAsNonRoot: true
runAsUser: {{ $user }}
runAsGroup: {{ $group }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
What a read-only root filesystem leaves a JVM and a Python to write to: `/tmp` and the log
folder, each an emptyDir bounded by `sizeLimit`. Takes {"logDir": <path>, "tmpSize": <qty>,
"logSize": <qty>}.
*/}}
{{- define "gridstream-lib.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSize | default "1Gi" }}
- name: logs
  emptyDir:
    sizeLimit: {{ .logSize | default "512Mi" }}
{{- end -}}

{{- define "gridstream-lib.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: logs
  mountPath: {{ .logDir | default "/opt/flink/log" }}
{{- end -}}
