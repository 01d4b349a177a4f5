{{/* Names. */}}
{{- define "pgwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name. At most 52 characters: a StatefulSet's pods add
"-N", and its controller-revision-hash label adds more, within 63.
*/}}
{{- define "pgwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pgwarden.headlessName" -}}
{{- printf "%s-headless" (include "pgwarden.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pgwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pgwarden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pgwarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pgwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pgwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The workload's kind: a StatefulSet gives peers stable ids. */}}
{{- define "pgwarden.workloadKind" -}}
{{- if .Values.peers.enabled -}}StatefulSet{{- else -}}Deployment{{- end -}}
{{- end -}}

{{/* How many peers the config lists (pods 0 … count-1). */}}
{{- define "pgwarden.peerCount" -}}
{{- $n := int .Values.peers.count -}}
{{- $most := int .Values.replicaCount -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) $most) -}}
{{- $most = int .Values.autoscaling.maxReplicas -}}
{{- end -}}
{{- if eq $n 0 -}}
{{- $n = $most -}}
{{- else if lt $n $most -}}
{{- fail (printf "peers.count (%d) is smaller than the most pods there can be (%d): pods without a peer entry could not get their cancels forwarded" $n $most) -}}
{{- end -}}
{{- if gt $n 16383 -}}
{{- fail "peers.count: peer ids go up to 16383" -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/*
pgwarden.config renders pooler.yaml: .root is the chart's root context.
values.config is the base; the keys below are set by the chart and override
it. With peers, every pod reads the same file: peer_id "hostname" makes pod
pgwarden-N peer N+1, and peers lists every pod there can be by its name
under the headless Service (written by hand below: pooler.yaml wants the
peer ids as bare integer keys, which toYaml would quote).
*/}}
{{- define "pgwarden.config" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $managed := dict
  "listen" (dict "addresses" (list "*") "port" (int $v.port) "unix_socket_dir" "")
  "metrics" (dict "listen" (printf ":%d" (int $v.metrics.port)))
  "timeouts" (dict
    "shutdown" (printf "%ds" (int $v.drain.shutdownTimeoutSeconds))
    "shutdown_accept_grace" (printf "%ds" (int $v.drain.acceptGraceSeconds)))
-}}
{{- if $v.userlist.existingSecret -}}
{{- $_ := set $managed "auth" (dict "file" (printf "/etc/pgwarden/userlist/%s" $v.userlist.key)) -}}
{{- end -}}
{{- $tls := dict -}}
{{- if $v.tls.client.existingSecret -}}
{{- $client := dict "sslmode" $v.tls.client.sslmode "cert_file" "/etc/pgwarden/tls/client/tls.crt" "key_file" "/etc/pgwarden/tls/client/tls.key" -}}
{{- if $v.tls.client.caKey -}}
{{- $_ := set $client "ca_file" (printf "/etc/pgwarden/tls/client/%s" $v.tls.client.caKey) -}}
{{- end -}}
{{- $_ := set $tls "client" $client -}}
{{- end -}}
{{- if $v.tls.server.caSecret -}}
{{- $_ := set $tls "server" (dict "sslmode" $v.tls.server.sslmode "ca_file" (printf "/etc/pgwarden/tls/server/%s" $v.tls.server.caKey)) -}}
{{- end -}}
{{- if $tls -}}
{{- $_ := set $managed "tls" $tls -}}
{{- end -}}
{{- $cfg := mergeOverwrite (deepCopy (default (dict) $v.config)) $managed -}}
{{- if $v.peers.enabled -}}
{{- $cfg = omit $cfg "peer_id" "peers" -}}
{{- end -}}
{{- toYaml $cfg }}
{{- if $v.peers.enabled }}
peer_id: hostname
peers:
{{- $fullname := include "pgwarden.fullname" $root }}
{{- $headless := include "pgwarden.headlessName" $root }}
{{- range $i := until (int (include "pgwarden.peerCount" $root)) }}
  {{ add $i 1 }}:
    host: {{ printf "%s-%d.%s.%s.svc.%s" $fullname $i $headless $root.Release.Namespace $v.peers.clusterDomain }}
    port: {{ int $v.port }}
    {{- if $v.peers.poolSize }}
    pool_size: {{ int $v.peers.poolSize }}
    {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The part of the config that only a restart applies: with
rollOnConfigChange false, the pods' checksum annotation covers only this.
*/}}
{{- define "pgwarden.restartConfig" -}}
{{- $cfg := include "pgwarden.config" (dict "root" .) | fromYaml -}}
{{- $client := default (dict) (get $cfg "client") -}}
{{- $network := default (dict) (get $cfg "network") -}}
{{- $log := default (dict) (get $cfg "log") -}}
{{- toYaml (dict
  "listen" (get $cfg "listen")
  "run_as_user" (get $cfg "run_as_user")
  "track_extra_parameters" (get $client "track_extra_parameters")
  "pkt_buf" (get $network "pkt_buf")
  "pid_file" (get $log "pid_file")) -}}
{{- end -}}

{{/* Checks that stop a release that could not work. */}}
{{- define "pgwarden.validate" -}}
{{- if .Values.azureWorkloadIdentity.enabled -}}
{{- if not .Values.azureWorkloadIdentity.clientId -}}
{{- fail "azureWorkloadIdentity.enabled needs azureWorkloadIdentity.clientId (the managed identity's or app registration's client ID)" -}}
{{- end -}}
{{- if not (contains "workload_identity" (toYaml .Values.config)) -}}
{{- fail "azureWorkloadIdentity.enabled: set config.entra.server_auth (or a database's server_auth) to workload_identity, or pgwarden will not use the identity" -}}
{{- end -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "azureWorkloadIdentity.enabled needs a service account of the release's own (serviceAccount.create, or serviceAccount.name annotated with azure.workload.identity/client-id)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is larger than autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
