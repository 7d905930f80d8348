{{/* Names, labels and the pieces every corral container shares. */}}

{{- define "corral.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "corral.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "corral.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "corral.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "corral.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "corral.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: gateway, worker, migrate, pipeline, train. */}}
{{- define "corral.selector" -}}
app.kubernetes.io/name: {{ include "corral.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "corral.secretName" -}}
{{- default (printf "%s-secrets" (include "corral.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "corral.image" -}}
{{ printf "%s:%s" .Values.image.repository (toString .Values.image.tag) }}
{{- end -}}

{{/* corral.yaml: a whole file from configFile, else the config map; both through tpl. */}}
{{- define "corral.configYaml" -}}
{{- if .Values.configFile -}}
{{ tpl .Values.configFile . }}
{{- else -}}
{{ tpl (toYaml .Values.config) . }}
{{- end -}}
{{- end -}}

{{/* The gateway's drain timeout as corral will read it: corral.yaml's gateway.drain_timeout_s, else 30. */}}
{{- define "corral.drainTimeout" -}}
{{- $config := fromYaml (include "corral.configYaml" .) -}}
{{- $gateway := default (dict) (get $config "gateway") -}}
{{- if hasKey $gateway "drain_timeout_s" -}}
{{- get $gateway "drain_timeout_s" | float64 | ceil | int -}}
{{- else -}}
30
{{- end -}}
{{- end -}}

{{- define "corral.env" -}}
- name: CORRAL_CONFIG
  value: /etc/corral/corral.yaml
- name: CORRAL_HOME
  value: /data
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "corral.envFrom" -}}
- secretRef:
    name: {{ include "corral.secretName" . }}
{{- end -}}

{{- define "corral.volumeMounts" -}}
- name: config
  mountPath: /etc/corral
  readOnly: true
- name: data
  mountPath: /data
{{- end -}}

{{- define "corral.volumes" -}}
- name: config
  configMap:
    name: {{ include "corral.fullname" . }}-config
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "corral.fullname" .)) .Values.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "corral.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}
