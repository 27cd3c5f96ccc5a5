{{/* Names, labels and the pieces the templates share. */}}

{{- define "insightloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "insightloop.fullname" -}}
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

{{- define "insightloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "insightloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "insightloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "insightloop.labels" -}}
helm.sh/chart: {{ include "insightloop.chart" . }}
{{ include "insightloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: insightloop
{{- end }}

{{- define "insightloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "insightloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "insightloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "insightloop.jobImage" -}}
{{- $img := .Values.retrain.job.image }}
{{- printf "%s:%s" (default .Values.image.repository $img.repository) (default (default .Chart.AppVersion .Values.image.tag) $img.tag) }}
{{- end }}

{{/* Where the chart mounts things inside the pods. */}}
{{- define "insightloop.configDir" -}}/etc/insightloop/config{{- end }}
{{- define "insightloop.jobTemplateDir" -}}/etc/insightloop/retrain{{- end }}
{{- define "insightloop.tokensDir" -}}/etc/insightloop/tokens{{- end }}

{{- define "insightloop.registryClaim" -}}
{{- default (printf "%s-registry" (include "insightloop.fullname" .)) .Values.persistence.registry.existingClaim }}
{{- end }}

{{- define "insightloop.stateClaim" -}}
{{- default (printf "%s-state" (include "insightloop.fullname" .)) .Values.persistence.state.existingClaim }}
{{- end }}

{{/* The scrape job the alert rules select (the metrics Service's name, as a ServiceMonitor labels it). */}}
{{- define "insightloop.metricsJob" -}}
{{- default (printf "%s-metrics" (include "insightloop.fullname" .)) .Values.prometheusRule.job }}
{{- end }}

{{/* config.scorer.drain_timeout_s, or the daemon's default. */}}
{{- define "insightloop.drainTimeout" -}}
{{- $scorer := (.Values.config | default dict).scorer | default dict }}
{{- if hasKey $scorer "drain_timeout_s" }}{{ $scorer.drain_timeout_s }}{{ else }}20{{ end }}
{{- end }}

{{/* terminationGracePeriodSeconds: longer than the drain deadline, always. */}}
{{- define "insightloop.terminationGrace" -}}
{{- $drain := include "insightloop.drainTimeout" . | float64 }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- $grace := .Values.terminationGracePeriodSeconds | int }}
{{- if le (float64 $grace) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.scorer.drain_timeout_s (%v)" $grace $drain) }}
{{- end }}
{{- $grace }}
{{- else }}
{{- add (ceil $drain | int) (max 1 (.Values.terminationGraceExtraSeconds | int)) }}
{{- end }}
{{- end }}

{{/* The daemon's config file: values.config plus what the chart decides (paths, port, TLS files). */}}
{{- define "insightloop.configYaml" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $kafka := $cfg.kafka | default dict }}
{{- $protocol := $kafka.security_protocol | default "PLAINTEXT" }}
{{- if and .Values.kafkaSasl.existingSecret (not (hasPrefix "SASL_" $protocol)) }}
{{- fail (printf "kafkaSasl.existingSecret is set but config.kafka.security_protocol is %s (use SASL_PLAINTEXT or SASL_SSL)" $protocol) }}
{{- end }}
{{- if and .Values.kafkaSasl.existingSecret (not $kafka.sasl_mechanism) }}
{{- fail "kafkaSasl.existingSecret is set: also set config.kafka.sasl_mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)" }}
{{- end }}
{{- if and .Values.kafkaTls.existingSecret (not (has $protocol (list "SSL" "SASL_SSL"))) }}
{{- fail (printf "kafkaTls.existingSecret is set but config.kafka.security_protocol is %s (use SSL or SASL_SSL)" $protocol) }}
{{- end }}
{{- if or (hasKey $kafka "sasl_username") (hasKey $kafka "sasl_password") }}
{{- fail "do not put SASL credentials in config.kafka: name a Secret in kafkaSasl.existingSecret" }}
{{- end }}
{{- if or (hasKey ($cfg.api | default dict) "approval_token") (hasKey ($cfg.api | default dict) "tokens_file") }}
{{- fail "do not put tokens in config.api: name Secrets in auth.existingSecret or auth.tokensSecret" }}
{{- end }}
{{- if or (hasKey ($cfg.state | default dict) "url") (hasKey ($cfg.state | default dict) "password") }}
{{- fail "do not set config.state.url or config.state.password: set stateStore.postgresql.* (the password from a Secret)" }}
{{- end }}
{{- $state := dict "dir" .Values.persistence.state.mountPath }}
{{- with .Values.stateStore.postgresql }}
{{- if .host }}
{{- if not (or .existingSecret .password) }}
{{- fail "stateStore.postgresql.host is set: name the Secret holding the password in stateStore.postgresql.existingSecret (or set stateStore.postgresql.password)" }}
{{- end }}
{{- $_ := set $state "url" (include "insightloop.postgresUrl" $) }}
{{- end }}
{{- end }}
{{- $forced := dict
    "registry" (dict "path" .Values.persistence.registry.mountPath)
    "state" $state
    "api" (dict "http_port" (.Values.httpPort | int)) }}
{{- /* One number for a job's GPUs: the Job template's limit, the runner's torchrun processes, the budget. */}}
{{- $jobGpus := .Values.retrain.job.gpus | int }}
{{- $controller := $cfg.controller | default dict }}
{{- if and (hasKey $controller "gpus_per_job") (ne ($controller.gpus_per_job | int) $jobGpus) }}
{{- fail (printf "config.controller.gpus_per_job (%d) differs from retrain.job.gpus (%d): set retrain.job.gpus only, the chart passes it on" ($controller.gpus_per_job | int) $jobGpus) }}
{{- end }}
{{- $_ := set $forced "controller" (dict "gpus_per_job" $jobGpus) }}
{{- with .Values.kafkaTls }}
{{- if .existingSecret }}
{{- $tls := dict "ssl_cafile" (printf "%s/ca.crt" .mountPath) }}
{{- if .certKey }}{{ $_ := set $tls "ssl_certfile" (printf "%s/tls.crt" .mountPath) }}{{ end }}
{{- if .keyKey }}{{ $_ := set $tls "ssl_keyfile" (printf "%s/tls.key" .mountPath) }}{{ end }}
{{- $_ := set $forced "kafka" $tls }}
{{- end }}
{{- end }}
{{- if .Values.auth.tokensSecret }}
{{- $_ := set $forced.api "tokens_file" (printf "%s/tokens.yaml" (include "insightloop.tokensDir" .)) }}
{{- end }}
{{- if and .Values.ingress.enabled (not (hasKey ($cfg.api | default dict) "url")) }}
{{- $url := printf "%s://%s" (ternary "https" "http" (not (empty .Values.ingress.tlsSecretName))) .Values.ingress.host }}
{{- $_ := set $forced.api "url" $url }}
{{- end }}
{{- if not (hasKey ($cfg.api | default dict) "allowed_hosts") }}
{{- /* The Host names people and pods use for the API (DNS rebinding is refused for any other). */}}
{{- $svc := include "insightloop.fullname" . }}
{{- $hosts := list "localhost" "127.0.0.1" "[::1]" $svc (printf "%s.%s" $svc .Release.Namespace) ".svc" ".svc.cluster.local" }}
{{- if .Values.ingress.enabled }}{{ $hosts = append $hosts .Values.ingress.host }}{{ end }}
{{- $_ := set $forced.api "allowed_hosts" $hosts }}
{{- end }}
{{- toYaml (mergeOverwrite $cfg $forced) }}
{{- end }}

{{/* The state store's PostgreSQL URL, without the password (that comes from the Secret as an env var). */}}
{{- define "insightloop.postgresUrl" -}}
{{- with .Values.stateStore.postgresql -}}
postgresql://{{ .user | urlquery }}@{{ .host }}:{{ .port | int }}/{{ .database | urlquery }}?sslmode={{ .sslmode }}
{{- end }}
{{- end }}

{{/* The Secret holding the state store's password: the named one, or the one the chart creates. */}}
{{- define "insightloop.postgresSecret" -}}
{{- default (printf "%s-postgresql" (include "insightloop.fullname" .)) .Values.stateStore.postgresql.existingSecret }}
{{- end }}

{{/* The role flags: which roles need the state store, the Kubernetes API, or serve the public API. */}}
{{- define "insightloop.roleNeedsState" -}}
{{- if has . (list "all" "monitor" "controller" "api") }}true{{ end }}
{{- end }}
{{- define "insightloop.roleRunsJobs" -}}
{{- if has . (list "all" "controller") }}true{{ end }}
{{- end }}
{{- define "insightloop.roleServesApi" -}}
{{- if has . (list "all" "api") }}true{{ end }}
{{- end }}

{{/* Checks across the roles list: unique names, one monitor and one controller, singletons stay single. */}}
{{- define "insightloop.validateRoles" -}}
{{- $names := list }}
{{- $monitors := 0 }}
{{- $controllers := 0 }}
{{- range .Values.roles }}
{{- if has .name $names }}
{{- fail (printf "roles: the name %q is used twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- $replicas := . | dig "replicas" 1 | int }}
{{- if and (has .role (list "all" "monitor" "controller")) (gt $replicas 1) }}
{{- fail (printf "roles[%s]: role %s runs at most 1 replica (got %d); scale scorers instead" .name .role $replicas) }}
{{- end }}
{{- if has .role (list "all" "monitor") }}{{ $monitors = add1 $monitors }}{{ end }}
{{- if has .role (list "all" "controller") }}{{ $controllers = add1 $controllers }}{{ end }}
{{- end }}
{{- if gt $monitors 1 }}
{{- fail "roles: more than one Deployment runs the monitor (roles all and monitor)" }}
{{- end }}
{{- if gt $controllers 1 }}
{{- fail "roles: more than one Deployment runs the controller (roles all and controller)" }}
{{- end }}
{{- end }}
