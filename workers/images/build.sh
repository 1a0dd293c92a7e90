#!/usr/bin/env bash
# Build the images of compose.yaml without any outside container registry (run as root):
#   dockyard-base:SUITE      Debian, made with `mmdebstrap --variant=minbase` from the system's
#                            Debian mirror, then `docker import`
#   dockyard-redis:TAG       the base + Debian's redis-server (the farm's Redis, the context store)
#   dockyard-registry:TAG    the base + Debian's docker-registry (CNCF distribution), htpasswd auth
#   dockyard-worker:TAG      the base + python3, dockyard with Flower from this checkout (its
#                            dependencies from PyPI), the docker CLI and buildx (Debian 13's packages)
# into the engine that DOCKER_HOST names (default: Docker's own socket). The builds of these
# images use the host network (`docker build --network host`) to reach Debian's mirror and
# PyPI; tenants' builds never do.
#
# Cached, so a second run changes nothing and takes seconds: the base tarball is kept in the
# cache directory (with Debian 13's docker-cli and docker-buildx packages) and the base image
# is imported only when the engine lacks it; every other step comes from the engine's layer
# cache (the worker's dependencies are a layer of their own, rebuilt only when pyproject.toml
# changes). Images and layers live in the engine: a fresh clone on the same machine reuses them.
#
# Usage: build.sh [--rebuild]      (--rebuild: make the base tarball and every image anew)
#   DOCKYARD_IMAGE_TAG      tag of the redis, registry and worker images (default latest)
#   DOCKYARD_IMAGES_SUITE   Debian suite of the base (default bookworm; its python3 is 3.11)
#   DOCKYARD_IMAGES_CACHE   cache directory (default ${XDG_CACHE_HOME:-~/.cache}/dockyard-images)
#   DOCKYARD_DEBIAN_MIRROR  Debian mirror (default: the first of the system's apt sources)
#   DOCKYARD_IMAGES_CA_BUNDLE  certificates pip trusts in the worker's build (default the
#                           host's /etc/ssl/certs/ca-certificates.crt; mounted as a build secret)
# Progress and timings go to stderr; the last line on stdout names the images built.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TAG=${DOCKYARD_IMAGE_TAG:-latest}
SUITE=${DOCKYARD_IMAGES_SUITE:-bookworm}
CACHE=${DOCKYARD_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dockyard-images}
BASE=dockyard-base:$SUITE
REBUILD=0
export DEBIAN_FRONTEND=noninteractive

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=workers/debian.sh
. "$REPO/workers/debian.sh"

case "${1:-}" in
    "") ;;
    --rebuild) REBUILD=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "DOCKYARD_IMAGE_TAG is not a Docker tag: '$TAG'"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$CACHE"
LOGFILE=$CACHE/build.log
: >"$LOGFILE"

timed() {  # timed WHAT COMMAND...: run it with its output in the log, then say how long it took
    local what=$1 started=$SECONDS; shift
    if ! "$@" >>"$LOGFILE" 2>&1 </dev/null; then
        tail -n 30 "$LOGFILE" >&2 || true
        die "$what failed (full log: $LOGFILE)"
    fi
    log "$what: $((SECONDS - started)) s"
}

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

check_tools() {
    [ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap, docker)"
    docker info >/dev/null 2>&1 || die "no Docker engine answers at ${DOCKER_HOST:-the default socket}"
    if ! command -v mmdebstrap >/dev/null; then
        log "installing mmdebstrap"
        timed "apt-get update" apt-get -q -o DPkg::Lock::Timeout=900 update
        timed "apt-get install mmdebstrap" apt-get -q -y -o DPkg::Lock::Timeout=900 install --no-install-recommends mmdebstrap
    fi
}

# ------------------------------------------------------------------ base

make_base_tarball() {  # the minbase tarball, kept in the cache
    local tarball=$CACHE/base-$SUITE.tar mirror
    if [ -s "$tarball" ] && [ "$REBUILD" = 0 ]; then return; fi
    rm -rf "$tarball.new.tar"
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt sources; set DOCKYARD_DEBIAN_MIRROR"
    timed "base tarball ($SUITE from $mirror, mmdebstrap --variant=minbase)" \
        mmdebstrap --variant=minbase --include=ca-certificates \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        "$SUITE" "$tarball.new.tar" "$mirror"
    mv -f "$tarball.new.tar" "$tarball"
}

build_base() {
    if image_present "$BASE" && [ "$REBUILD" = 0 ]; then
        log "base: $BASE present"
        return
    fi
    make_base_tarball
    timed "base image $BASE (docker import)" docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["bash"]' \
        "$CACHE/base-$SUITE.tar" "$BASE"
}

# ---------------------------------------------------------------- images

docker_build() {  # docker_build NAME CONTEXT DOCKERFILE [ARGS...]
    local name=$1 context=$2 dockerfile=$3; shift 3
    local cache_args=()
    [ "$REBUILD" = 0 ] || cache_args=(--no-cache)
    timed "$name" docker build --network host "${cache_args[@]}" --build-arg "BASE=$BASE" \
        -f "$dockerfile" -t "$name" "$@" "$context"
}

build_service_images() {
    mkdir -p "$TMP/registry"
    cp "$HERE/registry.yml" "$TMP/registry/"
    docker_build "dockyard-redis:$TAG" "$TMP/registry" "$HERE/redis.Dockerfile"
    docker_build "dockyard-registry:$TAG" "$TMP/registry" "$HERE/registry.Dockerfile"
}

stage_worker() {  # the worker image's build context: source/ (the package's files) and docker/
    local stage=$1 deb debs=$CACHE/apt-trixie/deb
    mkdir -p "$stage/source" "$TMP/unpacked"
    (cd "$REPO" && cp -r pyproject.toml README.md config dockyard tasks workers "$stage/source/")
    find "$stage/source" -name __pycache__ -prune -exec rm -rf {} +
    if [ "$REBUILD" = 1 ] || ! ls "$debs"/docker-cli_*.deb "$debs"/docker-buildx_*.deb >/dev/null 2>&1; then
        rm -rf "$debs"
        timed "docker CLI and buildx (Debian 13's docker-cli and docker-buildx)" \
            trixie_download "$CACHE/apt-trixie" "$LOGFILE" docker-cli docker-buildx
    fi
    for deb in docker-cli docker-buildx; do
        dpkg-deb -x "$(ls -1v "$debs"/"$deb"_*.deb | tail -n 1)" "$TMP/unpacked"
    done
    install -D -m 0755 "$TMP/unpacked/usr/bin/docker" "$stage/docker/usr/bin/docker"
    install -D -m 0755 "$TMP/unpacked/usr/libexec/docker/cli-plugins/docker-buildx" \
        "$stage/docker/usr/libexec/docker/cli-plugins/docker-buildx"
}

build_worker() {
    stage_worker "$TMP/worker"
    local ca=${DOCKYARD_IMAGES_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    [ -r "$ca" ] || die "no CA bundle at $ca for pip in the worker's build (set DOCKYARD_IMAGES_CA_BUNDLE)"
    DOCKER_BUILDKIT=1 docker_build "dockyard-worker:$TAG" "$TMP/worker" "$HERE/worker.Dockerfile" \
        --secret "id=ca-bundle,src=$ca"
}

main() {
    local started=$SECONDS
    check_tools
    build_base
    build_service_images
    build_worker
    log "done in $((SECONDS - started)) s"
    echo "$BASE dockyard-redis:$TAG dockyard-registry:$TAG dockyard-worker:$TAG"
}

main
