#!/usr/bin/env bash
# Build the PixelFlow transcoder image from transcoder_image/Dockerfile (context: the repository
# root, filtered by .dockerignore).
#
#   transcoder_image/build.sh [--tag IMAGE] [--engine docker|buildah] [--bootstrap-base] [--no-cache]
#
# --tag IMAGE        image name (default: pixelflow-transcoder:latest)
# --engine ENGINE    docker or buildah (default: docker when a Docker engine answers, else buildah)
# --bootstrap-base   buildah only, for machines without registry access: when the base image
#                    debian:bookworm-slim is not in local storage, create it from a Debian mirror
#                    (mmdebstrap when installed, else debootstrap) and build with --pull=never.
#                    Needs root. The base image stays in local storage for later builds.
#
# Environment:
#   PIXELFLOW_BUILD_CA_BUNDLE   CA bundle trusted by pip/uv during the build (default:
#                               $SSL_CERT_FILE), for networks with a TLS-intercepting proxy. It
#                               is passed as a build secret and never stored in the image.
#   PIXELFLOW_DEBIAN_MIRROR     mirror for --bootstrap-base (default http://deb.debian.org/debian)
#   PIXELFLOW_DEBIAN_SECURITY_MIRROR   (default http://deb.debian.org/debian-security)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE_IMAGE=docker.io/library/debian:bookworm-slim
TAG=pixelflow-transcoder:latest
ENGINE=""
BOOTSTRAP=0
EXTRA=()

BASE_CTR=""

log() { printf 'transcoder_image: %s\n' "$*" >&2; }
cleanup() { if [ -n "$BASE_CTR" ]; then buildah rm "$BASE_CTR" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

while (($#)); do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --engine) ENGINE=$2; shift 2 ;;
    --bootstrap-base) BOOTSTRAP=1; shift ;;
    --no-cache) EXTRA+=(--no-cache); shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
done

if [ -z "$ENGINE" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v buildah >/dev/null 2>&1; then ENGINE=buildah
  else log "neither a Docker engine nor buildah is available"; exit 1
  fi
fi

CA_BUNDLE=${PIXELFLOW_BUILD_CA_BUNDLE:-${SSL_CERT_FILE:-}}
SECRET=()
if [ -n "$CA_BUNDLE" ] && [ -s "$CA_BUNDLE" ]; then
  SECRET=(--secret "id=ca_bundle,src=$CA_BUNDLE")
fi

# Create debian:bookworm-slim in buildah's local storage from Debian's own packages.
bootstrap_base() {
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    return 0
  fi
  local tool
  if command -v mmdebstrap >/dev/null 2>&1; then tool=mmdebstrap
  elif command -v debootstrap >/dev/null 2>&1; then tool=debootstrap
  else log "--bootstrap-base needs mmdebstrap or debootstrap"; exit 1
  fi
  [ "$(id -u)" = 0 ] || { log "--bootstrap-base needs root"; exit 1; }
  local mirror=${PIXELFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local security=${PIXELFLOW_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
  local rootfs bootstrap_log
  # The root file system is written straight into the mount of a new, empty container.
  BASE_CTR=$(buildah from scratch)
  rootfs=$(buildah mount "$BASE_CTR")
  bootstrap_log=$(mktemp)
  log "bootstrapping $BASE_IMAGE from $mirror with $tool"
  if ! "$tool" --variant=minbase bookworm "$rootfs" "$mirror" >"$bootstrap_log" 2>&1; then
    tail -20 "$bootstrap_log" >&2
    rm -f "$bootstrap_log"
    exit 1
  fi
  rm -f "$bootstrap_log"
  # The same apt sources and cleanliness as Debian's official image.
  rm -f "$rootfs/etc/apt/sources.list" "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Like Debian's official image (debuerreotype): dpkg skips fsync and documentation, apt skips
  # translations and keeps no package cache. Keeps layers small and builds fast.
  echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/linda/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/docker"
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
  printf '%s\n' "DPkg::Post-Invoke { $clean };" "APT::Update::Post-Invoke { $clean };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$rootfs/etc/apt/apt.conf.d/docker-clean"
  # Only inside the new root file system ($rootfs is never empty here).
  rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/cache/apt/*.bin \
    "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/var/log/*.log "${rootfs:?}"/usr/share/man/* \
    "${rootfs:?}"/usr/share/info/* "${rootfs:?}"/usr/share/locale/*/
  buildah umount "$BASE_CTR" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash --os linux --arch "$(dpkg --print-architecture)" "$BASE_CTR"
  buildah commit --rm --quiet "$BASE_CTR" "$BASE_IMAGE" >/dev/null
  BASE_CTR=""
  log "committed $BASE_IMAGE"
}

cd "$ROOT"
case "$ENGINE" in
  docker)
    ((BOOTSTRAP)) && log "--bootstrap-base is ignored with Docker"
    # BuildKit: the Dockerfile uses cache and secret mounts.
    DOCKER_BUILDKIT=1 exec docker build --file transcoder_image/Dockerfile --tag "$TAG" \
      "${SECRET[@]}" "${EXTRA[@]}" .
    ;;
  buildah)
    PULL=()
    if ((BOOTSTRAP)); then
      bootstrap_base
      PULL=(--pull=never)
    fi
    exec buildah build --isolation "${BUILDAH_ISOLATION:-chroot}" --layers --format docker \
      --file transcoder_image/Dockerfile --tag "$TAG" "${PULL[@]}" "${SECRET[@]}" "${EXTRA[@]}" .
    ;;
  *) log "unknown engine: $ENGINE"; exit 2 ;;
esac
