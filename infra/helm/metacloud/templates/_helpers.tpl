{{- define "metacloud.fullname" -}}{{ printf "%s-metacloud" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "metacloud.secretName" -}}{{ .Values.existingSecret | default (printf "%s-secrets" (include "metacloud.fullname" .)) }}{{- end -}}
{{- define "metacloud.labels" -}}
app.kubernetes.io/name: metacloud
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "metacloud.image" -}}{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}{{- end -}}
{{- define "metacloud.env" -}}
- name: METACLOUD_ENV
  value: production
- name: METACLOUD_PUBLIC_URL
  value: {{ required "set publicUrl (the https URL people and agents use)" .Values.publicUrl | quote }}
- name: TEMPORAL_ADDRESS
  value: {{ required "set temporal.address" .Values.temporal.address | quote }}
- name: TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
- name: TEMPORAL_TASK_QUEUE
  value: {{ .Values.temporal.taskQueue | quote }}
- name: TEMPORAL_TLS
  value: {{ .Values.temporal.tls | quote }}
- name: OTEL_EXPORTER
  value: {{ .Values.otel.exporter | quote }}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
{{- end }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- range $name, $key := dict "METACLOUD_SECRET_KEY" "secret-key" "DATABASE_URL" "database-url" "APP_DATABASE_URL" "app-database-url" "STRIPE_API_KEY" "stripe-api-key" "STRIPE_WEBHOOK_SECRET" "stripe-webhook-secret" "SMTP_URL" "smtp-url" "TEMPORAL_API_KEY" "temporal-api-key" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "metacloud.secretName" $ }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end -}}
{{- define "metacloud.securityContext" -}}
runAsNonRoot: true
runAsUser: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
