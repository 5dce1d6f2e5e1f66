{{- define "name" -}}
gardener-extension-runtime-sandbox
{{- end -}}

{{- define "image" -}}
{{- if hasPrefix "sha256:" .Values.image.tag -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{- define "labels" -}}
app.kubernetes.io/name: {{ include "name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "leaderElectionID" -}}
runtime-gvisor-leader-election
{{- end -}}

{{- define "heartbeatEnabled" -}}
{{- if not (has "heartbeat" .Values.disableControllers) -}}true{{- end -}}
{{- end -}}

{{- /* In a seed: Gardener's class for extensions; in the garden runtime cluster: the one
gardener-operator passes. */ -}}
{{- define "priorityClassName" -}}
{{- if and .Values.gardener .Values.gardener.runtimeCluster .Values.gardener.runtimeCluster.priorityClassName -}}
{{- .Values.gardener.runtimeCluster.priorityClassName -}}
{{- else -}}
gardener-system-900
{{- end -}}
{{- end -}}
