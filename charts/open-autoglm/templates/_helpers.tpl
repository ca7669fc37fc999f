{{/*
Naming and labels shared by every template.
*/}}

{{- define "open-autoglm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix: "<release>-<chart>", or the release name alone when it already contains the
chart name. Truncated to leave room for the longest suffix ("-node-agent", 11 characters)
within the 63-character label limit.
*/}}
{{- define "open-autoglm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "open-autoglm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "open-autoglm.labels" -}}
helm.sh/chart: {{ include "open-autoglm.chart" . }}
app.kubernetes.io/name: {{ include "open-autoglm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: open-autoglm
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "controller"). */}}
{{- define "open-autoglm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "open-autoglm.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects. */}}
{{- define "open-autoglm.componentLabels" -}}
{{ include "open-autoglm.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image reference: call with (dict "ctx" $ "image" .Values.controller.image). */}}
{{- define "open-autoglm.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- if .ctx.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .ctx.Values.image.registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "open-autoglm.controller.fullname" -}}
{{- printf "%s-controller" (include "open-autoglm.fullname" .) }}
{{- end }}

{{- define "open-autoglm.nodeAgent.fullname" -}}
{{- printf "%s-node-agent" (include "open-autoglm.fullname" .) }}
{{- end }}

{{- define "open-autoglm.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "open-autoglm.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "open-autoglm.nodeAgent.serviceAccountName" -}}
{{- if .Values.nodeAgent.serviceAccount.create }}
{{- default (include "open-autoglm.nodeAgent.fullname" .) .Values.nodeAgent.serviceAccount.name }}
{{- else }}
{{- required "nodeAgent.serviceAccount.name is required when nodeAgent.serviceAccount.create is false" .Values.nodeAgent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "open-autoglm.worker.serviceAccountName" -}}
{{- if .Values.workers.serviceAccount.create }}
{{- default (printf "%s-worker" (include "open-autoglm.fullname" .)) .Values.workers.serviceAccount.name }}
{{- else }}
{{- required "workers.serviceAccount.name is required when workers.serviceAccount.create is false" .Values.workers.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "open-autoglm.leaseName" -}}
{{- default (include "open-autoglm.controller.fullname" .) .Values.controller.leaderElection.leaseName }}
{{- end }}

{{- define "open-autoglm.priorityClassName" -}}
{{- default (printf "%s-critical" (include "open-autoglm.fullname" .)) .Values.priorityClass.name }}
{{- end }}

{{/* Priority class of one component: call with (dict "ctx" $ "explicit" .Values.controller.priorityClassName). */}}
{{- define "open-autoglm.componentPriorityClass" -}}
{{- if .explicit }}
{{- .explicit }}
{{- else if .ctx.Values.priorityClass.create }}
{{- include "open-autoglm.priorityClassName" .ctx }}
{{- end }}
{{- end }}

{{/* Namespaces that get the worker service account: the release namespace plus workers.namespaces. */}}
{{- define "open-autoglm.workerNamespaces" -}}
{{- $all := list .Release.Namespace }}
{{- range .Values.workers.namespaces }}
{{- if not (has . $all) }}
{{- $all = append $all . }}
{{- end }}
{{- end }}
{{- toJson $all }}
{{- end }}

{{/* NetworkPolicy egress rules every component needs: DNS and the API server. */}}
{{- define "open-autoglm.egressDnsAndApiServer" -}}
# DNS, to resolve the API server and object stores.
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
# The API server.
- ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .Values.networkPolicy.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}
