#!/usr/bin/env bash
# Builds Nox's container images from the repository's Dockerfiles (images/*/Dockerfile) with
# no container registry: the Debian base is made here with debootstrap, the Node base is that
# Debian base plus this machine's Node 20, and buildah builds each image on those bases.
#
#   bash scripts/images.sh            build what changed; write .run/images/index.json
#   bash scripts/images.sh nox redis  only these images
#
# Output, read by the test harness and the Kubernetes node (`ctr -n k8s.io images import`):
#   .run/images/<name>.tar     docker-archive, tagged with the ref below
#   .run/images/index.json     [{name, ref, archive, imageId, inputs, built, seconds}], bases
#
# An image is rebuilt only when the hash of its inputs (build context, Dockerfile, base image
# id) changed; buildah's layer cache (under .tools/images/, kept by `make clean`) makes a
# rebuild after a source change skip the dependency layers. The script takes its own lock,
# so parallel test files wait for one build instead of racing it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.tools/images"
OUT="$ROOT/.run/images"
mkdir -p "$CACHE" "$OUT"

exec 9>"$CACHE/.lock"
flock 9

SUITE=bookworm
VARIANT=minbase
# Bump when the base recipe below changes: the base is then made again.
BASE_RECIPE=3
NODE_VERSION="$(node --version)" # v20.x.y: the host's Node, copied into the Node base
NODE_MAJOR="${NODE_VERSION#v}"
NODE_MAJOR="${NODE_MAJOR%%.*}"

log() { printf '[images] %s\n' "$*" >&2; }
timings=()
timed() {
  local what=$1 start=$SECONDS
  shift
  "$@"
  timings+=("$what=$((SECONDS - start))")
  log "$what took $((SECONDS - start))s"
}

# buildah keeps its images and layers under .tools/, never in /var/lib/containers.
BUILDAH=(buildah --root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs)
export TMPDIR="$CACHE/tmp" # buildah's cache mounts (npm's cache) live here too
mkdir -p "$TMPDIR"

# The Debian mirror this machine's apt uses (deb822 or one-line format); DEBIAN_MIRROR overrides.
debian_mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
  [[ -n "$m" ]] || m=$(grep -hs "^deb .* $SUITE " /etc/apt/sources.list | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
  [[ -n "$m" ]] || m=http://deb.debian.org/debian
  echo "${m%/}"
}
MIRROR="$(debian_mirror)"

DEBIAN_REF="localhost/nox-base/debian:$SUITE-$VARIANT"
NODE_REF="localhost/nox-base/node:${NODE_VERSION#v}-$SUITE-$VARIANT"

image_id() { "${BUILDAH[@]}" images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null | head -1; }

# The Debian base: debootstrap's minbase, with what the official debian:bookworm-slim image adds
# (all three apt suites, no daemons started by package scripts, no docs or man pages).
make_debian_rootfs() {
  local dir=$1
  rm -rf "$dir"
  debootstrap --variant="$VARIANT" "$SUITE" "$dir" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log" >&2; return 1; }
  local security="${MIRROR%/debian}/debian-security"
  rm -f "$dir/etc/apt/sources.list"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # A container has no init: package scripts must not try to start services.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 755 "$dir/usr/sbin/policy-rc.d"
  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$dir/etc/apt/apt.conf.d/docker-no-recommends"
  rm -rf "$dir/var/lib/apt/lists/"* "$dir/var/cache/apt/"*.bin "$dir/var/cache/apt/archives/"*.deb \
    "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/info" "$dir/var/log/"*.log
  mkdir -p "$dir/usr/share/doc"
}

# Imports a directory tree as a one-layer image.
import_rootfs() {
  local dir=$1 ref=$2 ctr mnt
  ctr=$("${BUILDAH[@]}" from scratch)
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  tar -C "$dir" -cf - . | tar -C "$mnt" -xpf -
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash --label "org.opencontainers.image.description=debootstrap --variant=$VARIANT $SUITE $MIRROR" "$ctr"
  "${BUILDAH[@]}" commit --rm -q "$ctr" "$ref" >/dev/null
}

debian_base() {
  local stamp="$SUITE $VARIANT $MIRROR recipe=$BASE_RECIPE"
  if [[ -n "$(image_id "$DEBIAN_REF")" && -f "$CACHE/debian.stamp" && "$(cat "$CACHE/debian.stamp")" == "$stamp" ]]; then
    return 0
  fi
  log "debootstrap --variant=$VARIANT $SUITE from $MIRROR"
  local dir="$CACHE/rootfs-$SUITE"
  make_debian_rootfs "$dir"
  # What the base holds, package by package: the base is pinned by this list (and its date).
  chroot "$dir" dpkg-query -W -f='${Package} ${Version}\n' >"$CACHE/debian-$SUITE.packages"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$CACHE/debian-$SUITE.date"
  import_rootfs "$dir" "$DEBIAN_REF"
  rm -rf "$dir"
  echo "$stamp" >"$CACHE/debian.stamp"
}

# The Node base: the Debian base plus this machine's Node (binary and bundled npm) laid out as in
# the official node:<major>-bookworm-slim image (/usr/local, user node 1000).
node_base() {
  local debian_id stamp
  debian_id=$(image_id "$DEBIAN_REF")
  stamp="$NODE_VERSION $debian_id"
  if [[ -n "$(image_id "$NODE_REF")" && -f "$CACHE/node.stamp" && "$(cat "$CACHE/node.stamp")" == "$stamp" ]]; then
    return 0
  fi
  log "node base $NODE_REF"
  local node npm_dir ctr mnt
  node=$(readlink -f "$(command -v node)")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  ctr=$("${BUILDAH[@]}" from --pull-never "$DEBIAN_REF")
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  install -D -m 755 "$node" "$mnt/usr/local/bin/node"
  mkdir -p "$mnt/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$mnt/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/local/bin/npx"
  grep -q '^node:' "$mnt/etc/group" || echo 'node:x:1000:' >>"$mnt/etc/group"
  grep -q '^node:' "$mnt/etc/passwd" || echo 'node:x:1000:1000::/home/node:/bin/bash' >>"$mnt/etc/passwd"
  install -d -o 1000 -g 1000 "$mnt/home/node"
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" config --env "NODE_VERSION=${NODE_VERSION#v}" --cmd node \
    --label "org.opencontainers.image.description=$DEBIAN_REF + node $NODE_VERSION from $node" "$ctr"
  "${BUILDAH[@]}" commit --rm -q "$ctr" "$NODE_REF" >/dev/null
  echo "$stamp" >"$CACHE/node.stamp"
}

# name | ref | build context (relative to the root) | build arguments
declare -A REF=([nox]=localhost/nox:dev [redis]=localhost/nox-redis:7 [postgres]=localhost/nox-postgres:15 [trainer]=localhost/nox-trainer:dev)
declare -A CONTEXT=([nox]=. [redis]=images/redis [postgres]=images/postgres [trainer]=trainer)

# The files that go into an image: its Dockerfile directory, and for nox the paths the root
# .dockerignore lets through (keep the two lists in step).
inputs_of() {
  case $1 in
    nox)
      (cd "$ROOT" && find package.json package-lock.json tsconfig.json .dockerignore proto/build.mjs \
        proto/*.ts scripts/copy-assets.mjs common sidecar operator admin images/nox -type f \
        ! -name '*.test.ts' ! -path 'proto/generated/*' | LC_ALL=C sort)
      ;;
    trainer)
      (cd "$ROOT" && find images/trainer trainer/requirements.txt trainer/nox_trainer -type f \
        ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)
      ;;
    *) (cd "$ROOT" && find "images/$1" -type f | LC_ALL=C sort) ;;
  esac
}

inputs_hash() {
  local name=$1 base_id=$2
  {
    echo "base $base_id"
    inputs_of "$name" | while IFS= read -r f; do
      printf '%s %s\n' "$(cd "$ROOT" && sha256sum <"$f" | cut -c1-64)" "$f"
    done
  } | sha256sum | cut -c1-64
}

declare -A BUILT SECONDS_OF HASH
build_image() {
  local name=$1 base_ref base_id hash start=$SECONDS
  case $name in nox) base_ref=$NODE_REF ;; *) base_ref=$DEBIAN_REF ;; esac
  base_id=$(image_id "$base_ref")
  hash=$(inputs_hash "$name" "$base_id")
  HASH[$name]=$hash
  local archive="$OUT/$name.tar" stampfile="$OUT/$name.inputs"
  if [[ -f "$archive" && -f "$stampfile" && "$(cat "$stampfile")" == "$hash" && -n "$(image_id "${REF[$name]}")" ]]; then
    BUILT[$name]=false
    SECONDS_OF[$name]=0
    log "$name: inputs unchanged, ${REF[$name]} kept"
    return 0
  fi
  log "$name: building ${REF[$name]} from $base_ref"
  local args=(--build-arg "BASE=$base_ref")
  if [[ $name == nox ]]; then
    args+=(--build-arg "NODE_IMAGE=$base_ref")
  fi
  if [[ $name == nox || $name == trainer ]]; then
    # A proxy between this machine and the npm registry or PyPI may need its own CA (as npm and pip here do).
    [[ -f "${NODE_EXTRA_CA_CERTS:-}" ]] && args+=(--secret "id=ca,src=$NODE_EXTRA_CA_CERTS")
  fi
  # --network host: the build steps fetch npm packages / Debian packages; no CNI is needed.
  timed "$name-build" "${BUILDAH[@]}" bud --runtime runc --pull-never --layers --network host -q \
    --file "$ROOT/images/$name/Dockerfile" "${args[@]}" --tag "${REF[$name]}" "$ROOT/${CONTEXT[$name]}" >/dev/null
  rm -f "$archive" "$stampfile"
  timed "$name-archive" "${BUILDAH[@]}" push -q "${REF[$name]}" "docker-archive:$archive:${REF[$name]}"
  echo "$hash" >"$stampfile"
  BUILT[$name]=true
  SECONDS_OF[$name]=$((SECONDS - start))
}

# Every image with an archive, those not asked for this run too (as their last build left them).
write_index() {
  local entries=() name
  for name in nox redis postgres trainer; do
    if [[ -z "${BUILT[$name]:-}" ]]; then
      [[ -f "$OUT/$name.tar" && -f "$OUT/$name.inputs" ]] || continue
      BUILT[$name]=false SECONDS_OF[$name]=0 HASH[$name]=$(cat "$OUT/$name.inputs")
    fi
    entries+=("$(printf '{"name":"%s","ref":"%s","archive":"%s","imageId":"%s","inputs":"%s","built":%s,"seconds":%s}' \
      "$name" "${REF[$name]}" "$OUT/$name.tar" "$(image_id "${REF[$name]}")" "${HASH[$name]}" \
      "${BUILT[$name]}" "${SECONDS_OF[$name]}")")
  done
  local steps
  steps=$(printf '"%s",' "${timings[@]}")
  {
    printf '{"images":[%s],\n' "$(IFS=,; echo "${entries[*]}")"
    printf '"bases":{"debian":"%s","node":"%s","mirror":"%s","debootstrapped":"%s","packages":"%s"},\n' \
      "$DEBIAN_REF" "$NODE_REF" "$MIRROR" "$(cat "$CACHE/debian-$SUITE.date")" "$CACHE/debian-$SUITE.packages"
    printf '"steps":[%s],"seconds":%s}\n' "${steps%,}" "$((SECONDS - RUN_START))"
  } >"$OUT/index.json.tmp"
  node -e 'const fs=require("fs");const f=process.argv[1];fs.writeFileSync(f.replace(/\.tmp$/,""),JSON.stringify(JSON.parse(fs.readFileSync(f,"utf8")),null,2)+"\n");fs.rmSync(f)' "$OUT/index.json.tmp"
}

# The vfs driver stores every build step as a full copy, so the layer cache grows by GBs with
# each rebuild: past NOX_IMAGES_CACHE_GB it is dropped (bases and tagged images stay; the next
# source change then reinstalls the npm dependencies from npm's cache, ≈ 1 min more).
prune_cache() {
  local limit=${NOX_IMAGES_CACHE_GB:-12} used
  used=$(du -s --block-size=1G "$CACHE/storage" 2>/dev/null | cut -f1)
  ((used > limit)) || return 0
  log "layer cache ${used} GB > ${limit} GB: pruning untagged images"
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
}

RUN_START=$SECONDS
NAMES=("$@")
((${#NAMES[@]})) || NAMES=(nox redis postgres trainer)
for n in "${NAMES[@]}"; do
  [[ -n "${REF[$n]:-}" ]] || { log "unknown image $n (known: ${!REF[*]})"; exit 2; }
done
timed debian-base debian_base
timed node-base node_base
for n in "${NAMES[@]}"; do build_image "$n"; done
timed prune prune_cache
write_index
log "done in $((SECONDS - RUN_START))s: $OUT/index.json"
