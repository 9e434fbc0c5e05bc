{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "nox.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: <release>-<chart>, or just <release> when the release
name already contains the chart name; truncated to 63 characters.
*/}}
{{- define "nox.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "nox.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries.
*/}}
{{- define "nox.labels" -}}
helm.sh/chart: {{ include "nox.chart" . }}
{{ include "nox.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nox
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (stable across upgrades: never add version labels here).
*/}}
{{- define "nox.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nox.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount the sidecar runs as.
*/}}
{{- define "nox.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nox.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the sidecar's ConfigMap.
*/}}
{{- define "nox.sidecarConfigName" -}}
{{- printf "%s-sidecar" (include "nox.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "nox.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Cross-field checks the schema cannot express; rendered (as nothing) by the ConfigMap.
*/}}
{{- define "nox.validate" -}}
{{- $s := include "nox.sidecarSettings" . | fromJson }}
{{- range $setting, $store := dict "quotaStore" $s.quotaStore "sessionStore" $s.sessionStore }}
{{- if and (ne $store "memory") (not $s.redisNodes) }}
{{- fail (printf "sidecar.%s=%s needs sidecar.redisNodes (host:port of the Redis nodes)" $setting $store) }}
{{- end }}
{{- end }}
{{- if and (ne $s.quotaStore "memory") (ne $s.sessionStore "memory") (ne $s.quotaStore $s.sessionStore) }}
{{- fail (printf "sidecar.quotaStore=%s and sidecar.sessionStore=%s share sidecar.redisNodes: both must be redis or both redis-cluster" $s.quotaStore $s.sessionStore) }}
{{- end }}
{{- if and .Values.redisCluster.enabled (has $s.quotaStore (list "redis" "redis-cluster")) }}
{{- $replicas := .Values.redisCluster.spec.replicasPerMaster | default 1 }}
{{- if hasKey .Values.redisCluster.spec "replicasPerMaster" }}{{ $replicas = .Values.redisCluster.spec.replicasPerMaster }}{{ end }}
{{- if gt (int $s.redisWaitReplicas) (int $replicas) }}
{{- fail (printf "sidecar.redisWaitReplicas=%d but redisCluster.spec.replicasPerMaster=%d: every quota charge would wait for replicas that do not exist" (int $s.redisWaitReplicas) (int $replicas)) }}
{{- end }}
{{- end }}
{{- if and (eq $s.configSource "kubernetes") $s.policies }}
{{- fail "sidecar.policies is read only with sidecar.configSource=files; with kubernetes, apply the policies to the cluster as resources" }}
{{- end }}
{{- if and (eq $s.configSource "kubernetes") $s.policySecrets }}
{{- fail "sidecar.policySecrets is read only with sidecar.configSource=files; with kubernetes, the sidecar reads Secrets through the API" }}
{{- end }}
{{- $seen := dict }}
{{- range $s.policySecrets }}
{{- $path := printf "%s/%s" (.namespace | default "default") .name }}
{{- if hasKey $seen $path }}
{{- fail (printf "sidecar.policySecrets lists %s twice" $path) }}
{{- end }}
{{- $_ := set $seen $path true }}
{{- end }}
{{- end }}

{{/*
Watched namespaces, without duplicates (empty: all namespaces).
*/}}
{{- define "nox.watchNamespaces" -}}
{{- .Values.sidecar.watchNamespaces | default list | uniq | join "," }}
{{- end }}

{{/*
files source: the file the ConfigMap's policies.yaml is mounted as (NOX_POLICY_PATH).
*/}}
{{- define "nox.policyFile" -}}
{{- printf "%s/policies.yaml" (trimSuffix "/" .Values.sidecar.policyMountPath) }}
{{- end }}

{{/*
Whether the Redis password Secret is used (a Redis store for quotas or sessions, and a
Secret name), and where it is mounted: the Secret's key is the file "password" there.
*/}}
{{- define "nox.redisAuth" -}}
{{- $s := include "nox.sidecarSettings" . | fromJson }}
{{- if and (or (ne $s.quotaStore "memory") (ne $s.sessionStore "memory")) $s.redisPasswordSecret.name }}true{{ end }}
{{- end }}
{{- define "nox.redisPasswordDir" -}}/var/run/secrets/nox/redis{{- end }}
{{- define "nox.redisPasswordFile" -}}{{ include "nox.redisPasswordDir" . }}/password{{- end }}

{{/*
files source: where sidecar.policySecrets are mounted (NOX_SECRETS_DIR), as <namespace>/<name>/<key>;
empty when there are none.
*/}}
{{- define "nox.secretsDir" -}}
{{- if and (eq .Values.sidecar.configSource "files") .Values.sidecar.policySecrets }}/var/run/secrets/nox/policy-secrets{{ end }}
{{- end }}

{{/*
Names of the sidecar's RBAC objects. Roles and RoleBindings live in the watched namespaces;
cluster-scoped names also carry the release namespace, so that releases of the same name
in different namespaces do not claim the same ClusterRole.
*/}}
{{- define "nox.sidecarRoleName" -}}
{{- printf "%s-sidecar" (include "nox.fullname" .) }}
{{- end }}
{{- define "nox.sidecarClusterRoleName" -}}
{{- printf "%s:%s-sidecar" .Release.Namespace (include "nox.fullname" .) }}
{{- end }}

{{/*
The nox-authz container, for the pod that runs the sidecar (NOTES.txt prints it): the
ConfigMap as environment, the database URL from its Secret, and the mounts NOX_POLICY_PATH
and NOX_REDIS_PASSWORD_FILE point into. Its volumes are "nox.sidecarVolumes".
*/}}
{{- define "nox.sidecarContainer" -}}
{{- $s := include "nox.sidecarSettings" . | fromJson -}}
name: nox-authz
image: {{ include "nox.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
# The image's entrypoint (`nox <program>`) runs the program named here.
args: ["authz"]
ports:
  - name: grpc
    containerPort: {{ $s.grpcPort | int }}
  - name: http-metrics
    containerPort: {{ $s.httpPort | int }}
envFrom:
  - configMapRef:
      name: {{ include "nox.sidecarConfigName" . }}
env:
  # The sidecar's name in audit events.
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
{{- if $s.databaseUrlSecret.name }}
  - name: NOX_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ $s.databaseUrlSecret.name }}
        key: {{ $s.databaseUrlSecret.key | quote }}
{{- end }}
{{- if not (or (hasPrefix "127." $s.httpHost) (eq $s.httpHost "localhost") (eq $s.httpHost "::1")) }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http-metrics
livenessProbe:
  httpGet:
    path: /healthz
    port: http-metrics
{{- end }}
{{- with include "nox.sidecarVolumeMounts" . | trim }}
volumeMounts:
  {{- . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The container's mounts (a YAML list; empty when there are none).
*/}}
{{- define "nox.sidecarVolumeMounts" -}}
{{- $s := .Values.sidecar -}}
{{- if eq $s.configSource "files" }}
- name: nox-policies
  mountPath: {{ $s.policyMountPath }}
  readOnly: true
{{- end }}
{{- if include "nox.redisAuth" . }}
- name: nox-redis-password
  mountPath: {{ include "nox.redisPasswordDir" . }}
  readOnly: true
{{- end }}
{{- if include "nox.auditSpool" . }}
- name: nox-audit-spool
  mountPath: {{ include "nox.auditSpoolDir" . }}
{{- end }}
{{- $dir := include "nox.secretsDir" . }}
{{- if $dir }}
{{- range $i, $secret := $s.policySecrets }}
- name: nox-policy-secret-{{ $i }}
  mountPath: {{ printf "%s/%s/%s" $dir ($secret.namespace | default "default") $secret.name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/*
The volumes "nox.sidecarContainer" mounts (a YAML list; empty when it mounts none).
*/}}
{{- define "nox.sidecarVolumes" -}}
{{- $s := include "nox.sidecarSettings" . | fromJson -}}
{{- if eq $s.configSource "files" }}
- name: nox-policies
  configMap:
    name: {{ include "nox.sidecarConfigName" . }}
    items:
      - key: policies.yaml
        path: policies.yaml
{{- end }}
{{- if include "nox.redisAuth" . }}
- name: nox-redis-password
  secret:
    secretName: {{ $s.redisPasswordSecret.name }}
    items:
      - key: {{ $s.redisPasswordSecret.key | quote }}
        path: password
{{- end }}
{{- if include "nox.auditSpool" . }}
# The audit spool: one per pod, on the node's disk; bounded by the sidecar (spoolMaxBytes),
# with room to spare for the segment being written.
- name: nox-audit-spool
  emptyDir:
    sizeLimit: {{ add (div (int64 $s.audit.spoolMaxBytes) 1048576) 64 }}Mi
{{- end }}
{{- if include "nox.secretsDir" . }}
{{- range $i, $secret := $s.policySecrets }}
- name: nox-policy-secret-{{ $i }}
  secret:
    secretName: {{ $secret.name }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when the sidecar writes audit events (a database and audit not Off): it gets a spool volume.
*/}}
{{- define "nox.auditSpool" -}}
{{- $s := include "nox.sidecarSettings" . | fromJson -}}
{{- if and $s.databaseUrlSecret.name (ne $s.audit.mode "Off") }}true{{ end }}
{{- end }}
{{- define "nox.auditSpoolDir" -}}/var/lib/nox/audit{{- end }}

{{/*
The operator's objects (Deployment, ServiceAccount, metrics Service, PDB, Roles) share one
name, distinct from the sidecar's; truncated to 63 characters (a Service name is a DNS label).
*/}}
{{- define "nox.operatorName" -}}
{{- printf "%s-operator" (include "nox.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the operator's objects, and the selector of its pods: the component keeps the
Deployment, Service and PDB from ever selecting pods of the same release that are not the
operator's.
*/}}
{{- define "nox.operatorLabels" -}}
{{ include "nox.labels" . }}
app.kubernetes.io/component: operator
{{- end }}
{{- define "nox.operatorSelectorLabels" -}}
{{ include "nox.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ClusterRole: like the sidecar's, it carries the release namespace, so that
releases of the same name in different namespaces do not claim the same one.
*/}}
{{- define "nox.operatorClusterRoleName" -}}
{{- printf "%s:%s" .Release.Namespace (include "nox.operatorName" .) }}
{{- end }}

{{/*
The Role in the release namespace for the leader-election Lease. Its own name: the release
namespace may also be a watched one, whose Role is named "nox.operatorName".
*/}}
{{- define "nox.operatorLeaderElectionRoleName" -}}
{{- printf "%s-leader-election" (include "nox.operatorName" .) }}
{{- end }}

{{/*
Name of the leader-election Lease: operator.leaseName, else the operator's name (one leader
per release).
*/}}
{{- define "nox.operatorLeaseName" -}}
{{- default (include "nox.operatorName" .) .Values.operator.leaseName }}
{{- end }}

{{/*
Namespaces the operator serves, without duplicates (empty: all namespaces).
*/}}
{{- define "nox.operatorWatchNamespaces" -}}
{{- .Values.operator.watchNamespaces | default list | uniq | join "," }}
{{- end }}

{{/*
The sidecar settings in force, as JSON: sidecar.* with what the chart's own RedisCluster and
PostgresCluster supply where a value is left empty, so that every template (ConfigMap,
container, volumes, NOTES) wires the same Secrets and addresses:
- quotaStore / sessionStore "": redis-cluster with redisCluster.enabled, else memory;
- redisNodes []: the RedisCluster's client Service (the rest of the nodes is discovered);
- redisPasswordSecret.name "": the RedisCluster's password Secret (spec.passwordSecretRef,
  else the generated <name>-auth, key password);
- databaseUrlSecret.name "": the PostgresCluster's generated application Secret, key uri
  (postgresql://owner:password@<name>-rw.<namespace>.svc:5432/database).
*/}}
{{- define "nox.sidecarSettings" -}}
{{- $s := deepCopy .Values.sidecar }}
{{- $redis := .Values.redisCluster }}
{{- $pg := .Values.postgresCluster }}
{{- $store := ternary "redis-cluster" "memory" $redis.enabled }}
{{- if not $s.quotaStore }}{{ $_ := set $s "quotaStore" $store }}{{ end }}
{{- if not $s.sessionStore }}{{ $_ := set $s "sessionStore" $store }}{{ end }}
{{- if $redis.enabled }}
{{- if not $s.redisNodes }}
{{- $_ := set $s "redisNodes" (list (printf "%s.%s.svc:6379" (include "nox.redisClusterName" .) .Release.Namespace)) }}
{{- end }}
{{- if not $s.redisPasswordSecret.name }}
{{- $ref := $redis.spec.passwordSecretRef | default dict }}
{{- $_ := set $s "redisPasswordSecret" (dict "name" ($ref.name | default (printf "%s-auth" (include "nox.redisClusterName" .))) "key" ($ref.key | default "password")) }}
{{- end }}
{{- end }}
{{- if and $pg.enabled (not $s.databaseUrlSecret.name) }}
{{- if $pg.spec.appSecretRef }}
{{- fail "postgresCluster.spec.appSecretRef: the operator then writes no Secret with the connection string; create one (postgresql://owner:password@<name>-rw.<namespace>.svc:5432/database) and name it in sidecar.databaseUrlSecret" }}
{{- end }}
{{- $_ := set $s "databaseUrlSecret" (dict "name" (printf "%s-app" (include "nox.postgresClusterName" .)) "key" "uri") }}
{{- end }}
{{- toJson $s }}
{{- end }}

{{/*
Names of the chart's RedisCluster and PostgresCluster (their children are named after them:
<name>-auth, <name>-app, <name>-rw, pods <name>-0, ...).
*/}}
{{- define "nox.redisClusterName" -}}
{{- default (printf "%s-redis" (include "nox.fullname" .)) .Values.redisCluster.name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- define "nox.postgresClusterName" -}}
{{- default (printf "%s-postgres" (include "nox.fullname" .)) .Values.postgresCluster.name | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
The ext_authz service's objects (Deployment, Service, PDB, HPA) share one name; its pods are
selected by component "authz", never the operator's.
*/}}
{{- define "nox.authzName" -}}
{{- printf "%s-authz" (include "nox.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "nox.authzLabels" -}}
{{ include "nox.labels" . }}
app.kubernetes.io/component: authz
{{- end }}
{{- define "nox.authzSelectorLabels" -}}
{{ include "nox.selectorLabels" . }}
app.kubernetes.io/component: authz
{{- end }}

{{/*
A container under the restricted Pod Security Standard: no privilege escalation, no
capabilities, read-only root filesystem, non-root, the runtime's default seccomp profile.
*/}}
{{- define "nox.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The admin API's objects share one name; its pods are selected by component "admin".
*/}}
{{- define "nox.adminName" -}}
{{- printf "%s-admin" (include "nox.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "nox.adminLabels" -}}
{{ include "nox.labels" . }}
app.kubernetes.io/component: admin
{{- end }}
{{- define "nox.adminSelectorLabels" -}}
{{ include "nox.selectorLabels" . }}
app.kubernetes.io/component: admin
{{- end }}
