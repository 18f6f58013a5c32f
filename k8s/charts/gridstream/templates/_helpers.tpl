{{/* GridStream's names; the labels, probes and security context come from gridstream-lib. */}}

{{- define "gridstream.fullname" -}}
{{- include "gridstream-lib.fullname" . -}}
{{- end -}}

{{- define "gridstream.serviceAccountName" -}}
{{- default (printf "%s-flink" (include "gridstream.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}

{{/* A job's FlinkDeployment name (Flink's cluster id: at most 45 characters). */}}
{{- define "gridstream.jobName" -}}
{{- printf "%s-%s" (include "gridstream.fullname" .ctx) .job | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{- define "gridstream.image" -}}
{{- $repository := required "image.repository: the registry path k8s/Dockerfile's image was pushed to" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The object-storage root, without a trailing slash. */}}
{{- define "gridstream.storageRoot" -}}
{{- required "objectStorage.root: where checkpoints, savepoints and HA metadata go (s3://bucket/prefix)" .Values.objectStorage.root | trimSuffix "/" -}}
{{- end -}}

{{/*
Flink's ports, fixed so the NetworkPolicies can name them (several default to a random port).
*/}}
{{- define "gridstream.flinkPorts" -}}
{{- dict "rest" 8081 "jobmanagerRpc" 6123 "blob" 6124 "taskmanagerRpc" 6122 "taskmanagerData" 6121 "queryService" 6125 | toYaml -}}
{{- end -}}

{{/*
A job's flinkConfiguration: the chart's common keys (`.Values.flinkConfiguration`, named as in
flink-conf.yaml), the deployment's (ports, HA, state locations, the worker's Python, as
`gridstream stack up` overlays them locally), then `extra` (the job's own), then the job's
`flinkConfiguration` values last. Takes {"ctx", "name", "job", "extra"}. Every value is a
string: that is what the CRD's map declares.
*/}}
{{- define "gridstream.flinkConfiguration" -}}
{{- $ctx := .ctx -}}
{{- $root := include "gridstream.storageRoot" $ctx -}}
{{- $ports := include "gridstream.flinkPorts" $ctx | fromYaml -}}
{{- $python := "/opt/gridstream/.venv/bin/python" -}}
{{- $conf := dict -}}
{{- range $key, $value := $ctx.Values.flinkConfiguration -}}
{{- $_ := set $conf $key (toString $value) -}}
{{- end -}}
{{- $deployment := dict
  "rest.port" $ports.rest
  "jobmanager.rpc.port" $ports.jobmanagerRpc
  "blob.server.port" $ports.blob
  "taskmanager.rpc.port" $ports.taskmanagerRpc
  "taskmanager.data.port" $ports.taskmanagerData
  "metrics.internal.query-service.port" $ports.queryService
  "high-availability.type" "kubernetes"
  "high-availability.storageDir" (printf "%s/ha/%s" $root .name)
  "execution.checkpointing.dir" (printf "%s/checkpoints/%s" $root .name)
  "state.checkpoints.dir" (printf "%s/checkpoints/%s" $root .name)
  "execution.checkpointing.savepoint-dir" (printf "%s/savepoints/%s" $root .name)
  "state.savepoints.dir" (printf "%s/savepoints/%s" $root .name)
  "python.executable" $python
  "python.client.executable" $python
  "classloader.parent-first-patterns.additional" "pemja."
  "io.tmp.dirs" "/tmp"
-}}
{{- with $ctx.Values.objectStorage.s3.endpoint -}}
{{- $_ := set $deployment "s3.endpoint" . -}}
{{- end -}}
{{- if $ctx.Values.objectStorage.s3.pathStyleAccess -}}
{{- $_ := set $deployment "s3.path.style.access" "true" -}}
{{- end -}}
{{- range $key, $value := $deployment -}}
{{- $_ := set $conf $key (toString $value) -}}
{{- end -}}
{{- range $key, $value := .extra -}}
{{- $_ := set $conf $key (toString $value) -}}
{{- end -}}
{{- range $key, $value := .job.flinkConfiguration -}}
{{- $_ := set $conf $key (toString $value) -}}
{{- end -}}
{{- range $key := keys $conf | sortAlpha }}
{{ $key }}: {{ get $conf $key | quote }}
{{- end -}}
{{- end -}}

{{/*
The environment every JobManager and TaskManager gets: the settings file, the endpoints, and
the credentials by reference (secretKeyRef). The job reads them through gridstream.config
(GRIDSTREAM_<SECTION>_<NAME>) on the JobManager, where it is built, and on the TaskManagers,
where its Python functions open their clients.
*/}}
{{- define "gridstream.env" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
- name: GRIDSTREAM_CONFIG
  value: /etc/gridstream/config/gridstream.yaml
- name: GRIDSTREAM_STACK_EXTERNAL_KAFKA
  value: {{ required "endpoints.kafkaBootstrapServers: the Kafka brokers (host:port,...)" $v.endpoints.kafkaBootstrapServers | quote }}
- name: GRIDSTREAM_STACK_EXTERNAL_REGISTRY
  value: {{ required "endpoints.schemaRegistryUrl: the schema registry's URL" $v.endpoints.schemaRegistryUrl | quote }}
- name: GRIDSTREAM_STACK_EXTERNAL_REDIS
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.redisUrl.name: the Secret holding the Redis URL" $v.secrets.redisUrl.name }}
      key: {{ $v.secrets.redisUrl.key }}
- name: GRIDSTREAM_JOB_KAFKA_CLIENT_PROPERTIES
  value: {{ printf "%s/%s" $v.secrets.kafkaClient.mountPath $v.secrets.kafkaClient.propertiesKey | quote }}
- name: GRIDSTREAM_JOB_PARALLELISM
  value: {{ .job.parallelism | quote }}
{{- with $v.secrets.redisPassword.name }}
- name: GRIDSTREAM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.secrets.redisPassword.key }}
{{- end }}
{{- with $v.secrets.registryUserInfo.name }}
- name: GRIDSTREAM_REGISTRY_USER_INFO
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.secrets.registryUserInfo.key }}
{{- end }}
{{- with $v.objectStorage.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/*
A pod template for one Flink role of one job: the hardened security context (gridstream-lib),
writable scratch for a read-only root filesystem, the settings and the Kafka client Secret
mounted read-only, probes, and `volumes`/`mounts` the job adds. Takes {"ctx", "name", "job",
"role" (jobmanager | taskmanager), "component", "volumes", "mounts"}.
*/}}
{{- define "gridstream.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $ports := include "gridstream.flinkPorts" $ctx | fromYaml -}}
{{- $labelArgs := dict "ctx" $ctx "component" .component -}}
{{- $size := ternary .job.jobManager .job.taskManager (eq .role "jobmanager") -}}
apiVersion: v1
kind: Pod
metadata:
  labels:
    {{- include "gridstream-lib.labels" $labelArgs | nindent 4 }}
    gridstream.io/flink-role: {{ .role }}
spec:
  serviceAccountName: {{ include "gridstream.serviceAccountName" $ctx }}
  automountServiceAccountToken: true
  enableServiceLinks: false
  securityContext:
    {{- include "gridstream-lib.podSecurityContext" $v.securityContext | nindent 4 }}
  containers:
    # The operator fills in this container's image, command, ports, cpu and memory.
    - name: flink-main-container
      securityContext:
        {{- include "gridstream-lib.containerSecurityContext" $v.securityContext | nindent 8 }}
      resources:
        {{- include "gridstream-lib.flinkContainerResources" $size | nindent 8 }}
      {{- if eq .role "jobmanager" }}
      {{- include "gridstream-lib.probes" (dict "tcp" (dict "port" $ports.rest) "startupSeconds" 180) | nindent 6 }}
      {{- else }}
      {{- include "gridstream-lib.probes" (dict "tcp" (dict "port" $ports.taskmanagerRpc) "startupSeconds" 180) | nindent 6 }}
      {{- end }}
      env:
        {{- include "gridstream.env" . | nindent 8 }}
      volumeMounts:
        {{- include "gridstream-lib.scratchMounts" (dict "logDir" "/opt/flink/log") | nindent 8 }}
        - name: settings
          mountPath: /etc/gridstream/config
          readOnly: true
        - name: kafka-client
          mountPath: {{ $v.secrets.kafkaClient.mountPath }}
          readOnly: true
        {{- with .mounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "gridstream-lib.scratchVolumes" (dict "tmpSize" "2Gi") | nindent 4 }}
    - name: settings
      configMap:
        name: {{ include "gridstream.fullname" $ctx }}-settings
    - name: kafka-client
      secret:
        secretName: {{ required "secrets.kafkaClient.name: the Secret holding the Kafka client properties" $v.secrets.kafkaClient.name }}
        defaultMode: 0440
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
