{{/* Chart name. */}}
{{- define "smsgw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified name prefix of every resource. */}}
{{- define "smsgw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "smsgw.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "smsgw.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "smsgw.operator.fullname" -}}{{ include "smsgw.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}
{{- define "smsgw.proxy.fullname" -}}{{ include "smsgw.fullname" . | trunc 57 | trimSuffix "-" }}-proxy{{- end -}}

{{/* Labels on every resource. */}}
{{- define "smsgw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "smsgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: smsgw
{{- end -}}

{{- define "smsgw.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smsgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "smsgw.proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smsgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "smsgw.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "smsgw.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "smsgw.proxy.serviceAccountName" -}}
{{- if .Values.proxy.serviceAccount.create -}}
{{- default (include "smsgw.proxy.fullname" .) .Values.proxy.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.proxy.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "smsgw.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "smsgw.adminSecretName" -}}
{{- default (printf "%s-admin" (include "smsgw.fullname" .)) .Values.secrets.existingAdminSecret -}}
{{- end -}}

{{- define "smsgw.jwtSecretName" -}}
{{- default (printf "%s-jwt" (include "smsgw.fullname" .)) .Values.secrets.existingJwtSecret -}}
{{- end -}}

{{- define "smsgw.dispatchSecretName" -}}
{{- default (printf "%s-dispatch" (include "smsgw.fullname" .)) .Values.secrets.existingDispatchSecret -}}
{{- end -}}

{{- define "smsgw.redis.fullname" -}}{{ include "smsgw.fullname" . | trunc 57 | trimSuffix "-" }}-redis{{- end -}}

{{- define "smsgw.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smsgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/*
Checks the value combinations that would give pods that cannot start, and
fails the render with what to set instead. Included by the proxy template.
*/}}
{{- define "smsgw.validate" -}}
{{- $r := .Values.redis -}}
{{- if and $r.enabled (or $r.url $r.existingSecret) -}}
{{- fail "redis.url / redis.existingSecret name an external Redis: set redis.enabled=false with them (redis.enabled ships one)" -}}
{{- end -}}
{{- if and (not $r.enabled) (not $r.url) (not $r.existingSecret) -}}
{{- fail "redis.url (or redis.existingSecret) is required when redis.enabled is false: every proxy shares the rate limits, contact-policy counters, users and (store.type=redis) messages through Redis" -}}
{{- end -}}
{{- if not (has .Values.store.type (list "redis" "aerospike")) -}}
{{- fail (printf "store.type must be redis or aerospike, not %q" .Values.store.type) -}}
{{- end -}}
{{- if and (eq .Values.store.type "aerospike") (not .Values.store.aerospike.hosts) -}}
{{- fail "store.aerospike.hosts is required when store.type is aerospike (host:port[,host:port…])" -}}
{{- end -}}
{{- if .Values.store.aerospike.ttl -}}
{{- fail "store.aerospike.ttl is now store.ttl (the record TTL of every store backend)" -}}
{{- end -}}
{{- if not (has .Values.contactPolicy.engine (list "redis" "mcp")) -}}
{{- fail (printf "contactPolicy.engine must be redis or mcp, not %q" .Values.contactPolicy.engine) -}}
{{- end -}}
{{- if and (eq .Values.contactPolicy.engine "mcp") (not .Values.contactPolicy.mcp.url) -}}
{{- fail "contactPolicy.mcp.url is required when contactPolicy.engine is mcp (e.g. http://mcp:1880/api/v1/check)" -}}
{{- end -}}
{{- if not (has .Values.contactPolicy.mcp.failMode (list "open" "closed")) -}}
{{- fail (printf "contactPolicy.mcp.failMode must be open or closed, not %q" .Values.contactPolicy.mcp.failMode) -}}
{{- end -}}
{{- if not (has .Values.rateLimit.failMode (list "open" "closed")) -}}
{{- fail (printf "rateLimit.failMode must be open or closed, not %q" .Values.rateLimit.failMode) -}}
{{- end -}}
{{- if and .Values.proxy.tls.enabled (not .Values.proxy.tls.existingSecret) (not .Values.proxy.tls.certManager.enabled) -}}
{{- fail "proxy.tls.enabled needs proxy.tls.existingSecret (a kubernetes.io/tls Secret) or proxy.tls.certManager.enabled" -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.gatewayApi.enabled -}}
{{- fail "ingress.enabled and gatewayApi.enabled both expose the proxies: choose one" -}}
{{- end -}}
{{- if .Values.s3.enabled -}}
{{- if not .Values.s3.bucket -}}
{{- fail "s3.bucket is required when s3.enabled (the journal's bucket)" -}}
{{- end -}}
{{- else if .Values.s3.blacklists -}}
{{- fail "s3.blacklists needs s3.enabled=true (with s3.endpoint/region, and s3.existingSecret unless the pods have an AWS identity)" -}}
{{- end -}}
{{- end -}}

{{/*
One env entry `name` holding the Redis URL: the shipped Redis's Service,
the external `redis.url`, or the key `url` of `redis.existingSecret`.
Call with (dict "name" "SMSGW_REDIS_URL" "ctx" $).
*/}}
{{- define "smsgw.redisUrlEnv" -}}
{{- $v := .ctx.Values -}}
- name: {{ .name }}
{{- if $v.redis.enabled }}
  value: "redis://{{ include "smsgw.redis.fullname" .ctx }}.{{ .ctx.Release.Namespace }}.svc:{{ $v.redis.port }}"
{{- else if $v.redis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.existingSecret }}
      key: url
{{- else }}
  value: {{ $v.redis.url | quote }}
{{- end }}
{{- end -}}

{{/* The Secret holding the operator's snapshot-stream certificate and its CA. */}}
{{- define "smsgw.configTlsSecretName" -}}
{{- default (printf "%s-config-tls" (include "smsgw.operator.fullname" .)) .Values.operator.configStream.tls.existingSecret -}}
{{- end -}}

{{/* The names the operator's certificate carries (its Service's). */}}
{{- define "smsgw.operator.dnsNames" -}}
{{- $n := include "smsgw.operator.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $n (printf "%s.%s" $n $ns) (printf "%s.%s.svc" $n $ns) (printf "%s.%s.svc.cluster.local" $n $ns) | toJson -}}
{{- end -}}

{{/* The Secret of the proxies' own TLS certificate. */}}
{{- define "smsgw.proxyTlsSecretName" -}}
{{- default (printf "%s-tls" (include "smsgw.proxy.fullname" .)) .Values.proxy.tls.existingSecret -}}
{{- end -}}

{{/*
cert-manager's ingress-shim annotation of an Ingress (the issuer of the
certificates its `tls` entries name), from `ingress.certManager`; empty
when neither issuer is set.
*/}}
{{- define "smsgw.ingress.certManager" -}}
{{- if and .clusterIssuer .issuer -}}
{{- fail "ingress.certManager: set clusterIssuer or issuer, not both" -}}
{{- end -}}
{{- with .clusterIssuer -}}
cert-manager.io/cluster-issuer: {{ . | quote }}
{{- end -}}
{{- with .issuer -}}
cert-manager.io/issuer: {{ . | quote }}
{{- end -}}
{{- end }}
