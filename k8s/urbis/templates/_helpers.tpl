{{/* The chart's name, truncated for labels. */}}
{{- define "urbis.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A release-scoped name: <release>-<suffix>. */}}
{{- define "urbis.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels; call with (dict "root" $ "component" "shard"). */}}
{{- define "urbis.labels" -}}
app.kubernetes.io/name: {{ include "urbis.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: urbis
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
urbis.example/city: {{ .root.Values.city | quote }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels; call with (dict "root" $ "component" "shard"). */}}
{{- define "urbis.selector" -}}
app.kubernetes.io/name: {{ include "urbis.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "urbis.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}

{{/* The environment every role's container gets: its log level, and the OpenTelemetry
resource (service, city, namespace, pod) and exporter endpoint. */}}
{{- define "urbis.env" -}}
- name: RUST_LOG
  value: {{ .root.Values.logLevel | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_SERVICE_NAME
  value: urbis-{{ .role }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "urbis.city=%s,k8s.namespace.name=%s,k8s.pod.name=$(POD_NAME)" .root.Values.city .root.Release.Namespace | quote }}
{{- with .root.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}
