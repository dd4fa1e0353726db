{{/* Names and labels shared by every template. */}}

{{- define "kubenova.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix for every object name; "kubenova" when the release is so named. */}}
{{- define "kubenova.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubenova.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kubenova.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "operator"). */}}
{{- define "kubenova.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubenova.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kubenova.componentLabels" -}}
{{ include "kubenova.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kubenova.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kubenova.operator" -}}{{ include "kubenova.fullname" . }}-operator{{- end -}}
{{- define "kubenova.agent" -}}{{ include "kubenova.fullname" . }}-agent{{- end -}}
{{- define "kubenova.webhooks" -}}{{ include "kubenova.fullname" . }}-webhooks{{- end -}}
{{- define "kubenova.webhookSecret" -}}{{ include "kubenova.webhooks" . }}-tls{{- end -}}

{{/* The API server's names for the components' ServiceAccounts. */}}
{{- define "kubenova.agentUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "kubenova.agent" . }}
{{- end -}}
{{- define "kubenova.operatorUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "kubenova.operator" . }}
{{- end -}}
{{- define "kubenova.webhooksUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "kubenova.webhooks" . }}
{{- end -}}

{{- define "kubenova.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kubenova.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
