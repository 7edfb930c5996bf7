{{/* Names, labels and images shared by every template. */}}

{{/* The release-scoped name prefix: "berth" for a release called berth, else "<release>-berth". */}}
{{- define "berth.fullname" -}}
{{- if contains "berth" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-berth" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; pass a dict with "ctx" (the root) and "component". */}}
{{- define "berth.labels" -}}
app.kubernetes.io/name: berth
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Selector labels (a subset that never changes across upgrades). */}}
{{- define "berth.selector" -}}
app.kubernetes.io/name: berth
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The Berth image reference: digest wins over tag, tag defaults to appVersion. */}}
{{- define "berth.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* A sidecar image; pass a dict with "ctx" and "s" (one entry of .Values.sidecars). */}}
{{- define "berth.sidecarImage" -}}
{{- printf "%s/%s:%s" .ctx.Values.sidecars.registry .s.image .s.tag -}}
{{- end -}}

{{/* The driver names (fixed: they are the API users' StorageClasses and PVs refer to). */}}
{{- define "berth.localDriver" -}}local.csi.berth.dev{{- end -}}
{{- define "berth.sharedDriver" -}}shared.csi.berth.dev{{- end -}}

{{/* The --shared-pool arguments of the shared driver. */}}
{{- define "berth.sharedPoolArgs" -}}
{{- range .Values.sharedPools }}
- --shared-pool={{ .name }}={{ .path }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts of the shared pools (the host's mounts propagate into the container). */}}
{{- define "berth.sharedPoolVolumes" -}}
{{- range .Values.sharedPools }}
- name: shared-pool-{{ .name }}
  hostPath:
    path: {{ .path }}
    type: Directory
{{- end }}
{{- end -}}
{{- define "berth.sharedPoolMounts" -}}
{{- range .Values.sharedPools }}
- name: shared-pool-{{ .name }}
  mountPath: {{ .path }}
  mountPropagation: HostToContainer
{{- end }}
{{- end -}}

{{/* Security context of a container that needs no privilege at all. */}}
{{- define "berth.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.nonRootUser }}
runAsGroup: {{ .Values.nonRootUser }}
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Security context of a CSI sidecar that only talks to a socket and the API server. The
     socket is created by the root plugin, so sidecars beside it run as root without any capability. */}}
{{- define "berth.sidecarSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
