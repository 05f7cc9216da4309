{{/*
Names and labels. Every helper takes a root scope (`.`, or `.Subcharts.cutover` from a chart
that includes the cutover container in its own pods).
*/}}
{{- define "cutover.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cutover.fullname" -}}
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

{{- define "cutover.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cutover.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cutover.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cutover.labels" -}}
helm.sh/chart: {{ include "cutover.chart" . }}
{{ include "cutover.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.mode }}
app.kubernetes.io/part-of: cutover
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "cutover.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cutover.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cutover.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* The Secret whose keys become the cutover container's environment ("" when none). */}}
{{- define "cutover.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else if and .Values.secret.create .Values.secret.values -}}
{{- include "cutover.fullname" . -}}
{{- end -}}
{{- end }}

{{- define "cutover.replicated" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
The values' `config` (the cutover YAML, one string) parsed, as JSON; an empty mapping when
it is empty. Invalid YAML fails the render.
*/}}
{{- define "cutover.parsedConfig" -}}
{{- $text := .Values.config | default "" -}}
{{- if not (kindIs "string" $text) -}}
{{- fail "cutover: config must be the cutover YAML as one string (config: |)" -}}
{{- end -}}
{{- $m := fromYaml $text -}}
{{- if hasKey $m "Error" -}}
{{- fail (printf "cutover: config is not valid YAML: %s" (get $m "Error")) -}}
{{- end -}}
{{- toJson $m -}}
{{- end }}

{{/* Kubernetes discovery (`config.publishing.kubernetes`): "true" when on. */}}
{{- define "cutover.discovery" -}}
{{- $k := dig "publishing" "kubernetes" nil (include "cutover.parsedConfig" . | fromJson) -}}
{{- if kindIs "map" $k }}true{{ else if and (kindIs "bool" $k) $k }}true{{ end }}
{{- end }}

{{/* The namespaces discovery watches, as a JSON list (cutover's default: [default]). */}}
{{- define "cutover.discoveryNamespaces" -}}
{{- $k := dig "publishing" "kubernetes" nil (include "cutover.parsedConfig" . | fromJson) -}}
{{- $ns := list "default" -}}
{{- if and (kindIs "map" $k) $k.namespaces }}{{ $ns = $k.namespaces }}{{ end -}}
{{- toJson $ns -}}
{{- end }}

{{/*
The config file as the pod reads it: the values' `config`, as written, then what the chart
owns (the listen address, the store, Redis).
*/}}
{{- define "cutover.configYaml" -}}
{{- include "cutover.validate" . -}}
{{- include "cutover.configBody" . -}}
{{- end }}

{{- define "cutover.configBody" -}}
{{- .Values.config | default "" | trimSuffix "\n" }}
# set by the chart: containerPorts.http, storage, redis
listen: {{ printf "0.0.0.0:%d" (int .Values.containerPorts.http) | quote }}
{{- if eq .Values.storage.type "postgresql" }}
storage: "${CUTOVER_DATABASE_URL}"
{{- else }}
storage: {{ printf "sqlite://%s" .Values.storage.sqlite.path | quote }}
{{- end }}
{{- if .Values.redis.enabled }}
redis: "${CUTOVER_REDIS_URL}"
{{- end }}
{{- end }}

{{/*
`limits.drain_timeout` in whole seconds, rounded up (durations as docs/config.md writes them:
"25s", "1m30s", "500ms", or a number of seconds).
*/}}
{{- define "cutover.drainSeconds" -}}
{{- $v := dig "limits" "drain_timeout" "25s" (include "cutover.parsedConfig" . | fromJson) -}}
{{- if kindIs "string" $v -}}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d)?)+$" $v) -}}
{{- fail (printf "cutover: config.limits.drain_timeout must be a literal duration such as 25s or 1m30s (the chart sizes terminationGracePeriodSeconds from it), got %q" $v) -}}
{{- end -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)?" $v -1 -}}
{{- $n := regexFind "^[0-9]+(\\.[0-9]+)?" . | float64 -}}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" . "" -}}
{{- $factor := get (dict "" 1.0 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0) $unit -}}
{{- $total = addf $total (mulf $n $factor) -}}
{{- end -}}
{{- ceil $total | int -}}
{{- else -}}
{{- ceil (float64 $v) | int -}}
{{- end -}}
{{- end }}

{{- define "cutover.terminationGracePeriodSeconds" -}}
{{- $drain := include "cutover.drainSeconds" . | int -}}
{{- $stop := int .Values.preStopSleepSeconds -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $stop $drain 5 -}}
{{- else if le (int .Values.terminationGracePeriodSeconds) (add $stop $drain) -}}
{{- fail (printf "cutover: terminationGracePeriodSeconds (%d) must be longer than preStopSleepSeconds (%d) + config.limits.drain_timeout (%ds), or the pod is killed while it drains" (int .Values.terminationGracePeriodSeconds) $stop $drain) -}}
{{- else -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end }}

{{/* The admin listener's port when it listens beyond loopback, else "". */}}
{{- define "cutover.adminPort" -}}
{{- $admin := dig "admin" nil (include "cutover.parsedConfig" . | fromJson) -}}
{{- if kindIs "map" $admin -}}
{{- $listen := toString (get $admin "listen") -}}
{{- if and $listen (not (regexMatch "^(127\\.|localhost|\\[::1\\])" $listen)) (regexMatch ":[0-9]+$" $listen) -}}
{{- regexFind "[0-9]+$" $listen -}}
{{- end -}}
{{- end -}}
{{- end }}
