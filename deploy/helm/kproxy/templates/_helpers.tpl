{{/* The release's name for everything it creates, at most 63 characters. */}}
{{- define "kproxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kproxy.headless" -}}
{{- printf "%s-headless" (include "kproxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kproxy.labels" -}}
{{ include "kproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kproxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
kproxy.config: the config file. The user's `config:` wins; the chart fills
only what depends on the pod. advertise uses ${POD_NAME} and
${POD_NAMESPACE}, which kproxy expands at start (the only keys it expands),
so one ConfigMap serves every pod of the StatefulSet.
*/}}
{{- define "kproxy.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if not (hasKey $cfg "listen") -}}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.kafkaPort)) -}}
{{- end -}}
{{- if not (hasKey $cfg "advertise") -}}
{{- $_ := set $cfg "advertise" (printf "${POD_NAME}.%s.${POD_NAMESPACE}.svc.%s:%d" (include "kproxy.headless" .) .Values.clusterDomain (int .Values.kafkaPort)) -}}
{{- end -}}
{{- if not (hasKey $cfg "admin") -}}
{{- $admin := dict "address" (printf "127.0.0.1:%d" (int .Values.adminPort)) -}}
{{- if .Values.metrics.enabled -}}
{{- $_ := set $admin "metrics_address" (printf "0.0.0.0:%d" (int .Values.metrics.port)) -}}
{{- end -}}
{{- $_ := set $cfg "admin" $admin -}}
{{- end -}}
{{- if and (hasKey $cfg "control") (not (hasKey $cfg "instance")) -}}
{{- /* One virtual cluster of several pods: each pod's instance id is its
StatefulSet name with the ordinal (mig-kproxy-0, -1, ...), stable across
restarts, as the membership needs (docs/ha.md). */ -}}
{{- $_ := set $cfg "instance" (dict "id" "${POD_NAME}") -}}
{{- end -}}
{{- if and .Values.persistence.enabled (not (hasKey $cfg "state_dir")) -}}
{{- $_ := set $cfg "state_dir" "/var/lib/kproxy/state" -}}
{{- end -}}
{{- if .Values.external.enabled -}}
{{- if not .Values.external.advertise -}}
{{- fail "external.advertise is required when external.enabled: the address clients outside the cluster dial, e.g. \"${POD_NAME}.kafka.example.com:9094\"" -}}
{{- end -}}
{{- $ext := dict "name" "external" "listen" (printf "0.0.0.0:%d" (int .Values.external.port)) "advertise" .Values.external.advertise -}}
{{- $_ := set $cfg "listeners" (append (default (list) $cfg.listeners) $ext) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
kproxy.checkReplicas: replicaCount > 1 is kproxy's multi-instance mode
(docs/ha.md). It needs config.control (the membership group through which
the pods form one virtual cluster). config.replicate is allowed: each
replicated partition is copied by the pod that leads it, with a
transactional producer the target fences when another pod takes the
partition over; cutovers and group home moves run through the control
topic, and kproxy's own validation refuses reads of the copy while
several pods copy (those are not coordinated yet).
*/}}
{{- define "kproxy.checkReplicas" -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- if not (hasKey .Values.config "control") -}}
{{- fail "replicaCount > 1 needs config.control: the pods form one virtual cluster through a membership group on the control cluster (e.g. `control: {}` for the target; docs/ha.md). Without it each pod would answer as the whole cluster." -}}
{{- end -}}
{{- end -}}
{{- end -}}
