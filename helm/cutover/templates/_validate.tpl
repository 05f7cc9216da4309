{{/*
Values that cannot work fail the render with a message that says what to change.
*/}}
{{- define "cutover.validate" -}}
{{- $v := .Values -}}
{{- if not (has $v.mode (list "gateway" "sidecar")) -}}
{{- fail (printf "cutover: mode must be gateway or sidecar, got %q" (toString $v.mode)) -}}
{{- end -}}
{{- if and (include "cutover.replicated" .) (or (ne $v.storage.type "postgresql") (not $v.redis.enabled)) -}}
{{- fail (printf "cutover: %s needs storage.type=postgresql and redis.enabled=true (got storage.type=%s, redis.enabled=%t): replicas on SQLite would each keep their own outbox and weights" (ternary "autoscaling" (printf "replicaCount=%d" (int $v.replicaCount)) $v.autoscaling.enabled) $v.storage.type $v.redis.enabled) -}}
{{- end -}}
{{- $config := include "cutover.parsedConfig" . | fromJson -}}
{{- range $key, $owner := dict "listen" "containerPorts.http" "storage" "storage.type" "redis" "redis.enabled" -}}
{{- if hasKey $config $key -}}
{{- fail (printf "cutover: config.%s is set by the chart: use %s instead" $key $owner) -}}
{{- end -}}
{{- end -}}
{{- include "cutover.checkSecrets" (dict "path" "config" "value" $config "tokens" false) -}}
{{- if and (eq $v.mode "sidecar") $v.sidecar.deployment (not (and (kindIs "map" $v.sidecar.app) $v.sidecar.app.image)) -}}
{{- fail "cutover: mode=sidecar needs sidecar.app.image (the application's container)" -}}
{{- end -}}
{{- if and $v.service.admin.enabled (not (include "cutover.adminPort" .)) -}}
{{- fail "cutover: service.admin.enabled needs config.admin.listen on a non-loopback address, e.g. 0.0.0.0:9901 (with admin.token or admin.tokens)" -}}
{{- end -}}
{{- if not $v.secret.existingSecret -}}
{{- $provided := list -}}
{{- if $v.secret.create }}{{ $provided = keys ($v.secret.values | default dict) }}{{ end -}}
{{- range $v.extraEnv }}{{ $provided = append $provided .name }}{{ end -}}
{{- $body := include "cutover.configBody" . | fromYaml | toYaml | replace "$${" "" -}}
{{- range regexFindAll "\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" $body -1 | uniq -}}
{{- $name := trimSuffix "}" (trimPrefix "${" .) -}}
{{- if not (has $name $provided) -}}
{{- fail (printf "cutover: the config needs the secret %s (it references ${%s}): set secret.values.%s, or secret.existingSecret" $name $name $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
No credential as a literal in the ConfigMap: keys named like cutover's secrets (token,
password, secret, *key, admin.tokens.*, an Authorization header) and URLs with a password
must come from `${ENV}`.
*/}}
{{- define "cutover.checkSecrets" -}}
{{- $path := .path -}}
{{- $tokens := .tokens -}}
{{- if kindIs "map" .value -}}
{{- range $key, $item := .value -}}
{{- $lower := lower (toString $key) -}}
{{- $here := printf "%s.%s" $path $key -}}
{{- if kindIs "string" $item -}}
{{- $secretKey := or $tokens (regexMatch "(token|password|secret)" $lower) (hasSuffix "key" $lower) (eq $lower "authorization") -}}
{{- if and $secretKey $item (not (contains "${" $item)) -}}
{{- fail (printf "cutover: %s holds a literal credential: write ${NAME} and set secret.values.NAME (the ConfigMap never holds secrets)" $here) -}}
{{- end -}}
{{- if and (regexMatch "^[a-z+]+://[^/@]*:[^/@]*@" $item) (not (contains "${" $item)) -}}
{{- fail (printf "cutover: %s is a URL with a password: write ${NAME} and set secret.values.NAME (the ConfigMap never holds secrets)" $here) -}}
{{- end -}}
{{- else -}}
{{- include "cutover.checkSecrets" (dict "path" $here "value" $item "tokens" (eq $lower "tokens")) -}}
{{- end -}}
{{- end -}}
{{- else if kindIs "slice" .value -}}
{{- range $i, $item := .value -}}
{{- if not (kindIs "string" $item) -}}
{{- include "cutover.checkSecrets" (dict "path" (printf "%s[%d]" $path $i) "value" $item "tokens" false) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}
