{{/*
The parts of a pod that run cutover, shared by this chart's Deployment (both modes) and by any
chart that adds cutover to its own pods. Such a chart lists this one as a dependency (with
`mode: sidecar` and `sidecar.deployment: false`) and writes, in its pod template:

  metadata:
    annotations:
      {{- include "cutover.podAnnotations" .Subcharts.cutover | nindent 8 }}
  spec:
    initContainers:
      {{- include "cutover.initContainer" .Subcharts.cutover | nindent 8 }}
    containers:
      {{- include "cutover.container" .Subcharts.cutover | nindent 8 }}
    volumes:
      {{- include "cutover.volumes" .Subcharts.cutover | nindent 8 }}
*/}}

{{/* Pod annotations: a change of the config or of the chart's Secret rolls the pods. */}}
{{- define "cutover.podAnnotations" -}}
checksum/config: {{ include "cutover.configYaml" . | sha256sum }}
{{- if and (not .Values.secret.existingSecret) .Values.secret.create .Values.secret.values }}
checksum/secret: {{ toJson .Values.secret.values | sha256sum }}
{{- end }}
{{- end }}

{{- define "cutover.env" -}}
{{- $secret := include "cutover.secretName" . -}}
{{- if or $secret .Values.extraEnvFrom }}
envFrom:
  {{- if $secret }}
  - secretRef:
      name: {{ $secret }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
env:
  - name: CUTOVER_POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "cutover.volumeMounts" -}}
- name: cutover-config
  mountPath: /etc/cutover
  readOnly: true
- name: cutover-state
  mountPath: /var/lib/cutover
- name: cutover-tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "cutover.initContainer" -}}
- name: cutover-check-config
  image: {{ include "cutover.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["cutover", "check-config", "/etc/cutover/cutover.yaml"]
  {{- include "cutover.env" . | trim | nindent 2 }}
  volumeMounts:
    {{- include "cutover.volumeMounts" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.initResources | nindent 4 }}
{{- end }}

{{- define "cutover.container" -}}
- name: cutover
  image: {{ include "cutover.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["cutover", "serve", "-c", "/etc/cutover/cutover.yaml"]
  ports:
    - name: http
      containerPort: {{ .Values.containerPorts.http }}
      protocol: TCP
    {{- with include "cutover.adminPort" . }}
    - name: admin
      containerPort: {{ . }}
      protocol: TCP
    {{- end }}
  {{- include "cutover.env" . | trim | nindent 2 }}
  volumeMounts:
    {{- include "cutover.volumeMounts" . | nindent 4 }}
  startupProbe:
    httpGet: {path: /healthz, port: http}
    {{- toYaml .Values.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet: {path: /healthz, port: http}
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet: {path: /readyz, port: http}
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  lifecycle:
    preStop:
      exec:
        # keep serving while the endpoints controller drops the pod; SIGTERM then drains
        command: ["sleep", "{{ int .Values.preStopSleepSeconds }}"]
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
{{- end }}

{{- define "cutover.volumes" -}}
- name: cutover-config
  configMap:
    name: {{ include "cutover.fullname" . }}
- name: cutover-state
  {{- if and (eq .Values.storage.type "sqlite") .Values.storage.sqlite.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.storage.sqlite.persistence.existingClaim | default (include "cutover.fullname" .) }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: cutover-tmp
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
