{{- define "metacloud-agent.labels" -}}
app.kubernetes.io/name: metacloud-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "metacloud-agent.tokenSecret" -}}
{{- if .Values.existingSecret -}}
{{ .Values.existingSecret }}
{{- else -}}
metacloud-agent-token
{{- end -}}
{{- end -}}
