#!/usr/bin/env bash
# PixelFlow's two entry points for a fresh clone:
#   ./dev.sh up     set everything up, start the local event-driven stack and transcode a sample upload
#   ./dev.sh test   set everything up and run the whole test suite
# Other commands: ./dev.sh setup [--test] | down | bench
set -euo pipefail
cd "$(dirname "$0")"

# System packages: FFmpeg always; the test suite also drives Chromium, builds the transcoder
# image with buildah (no Docker engine needed) and bootstraps its Debian base with debootstrap,
# and runs a Prefect server on PostgreSQL; `./dev.sh up --database postgres` installs it too.
APT_RUN=(ffmpeg)
APT_TEST=(ffmpeg chromium buildah debootstrap mmdebstrap fuse-overlayfs uidmap postgresql)

log() { printf '\033[1mpixelflow:\033[0m %s\n' "$*" >&2; }

install_system() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    log "please install: ${missing[*]} (this script installs them only on Debian/Ubuntu)"
    command -v ffmpeg >/dev/null || exit 1
    return 0
  fi
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  log "installing system packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

uv_cmd() {
  if command -v uv >/dev/null 2>&1; then uv "$@"; else python3 -m uv "$@"; fi
}

install_python() {
  if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
    log "installing uv"
    python3 -m pip install --quiet uv
  fi
  log "installing PixelFlow and its pinned dependencies (uv.lock) into .venv"
  # Bytecode compiled at install time: every flow run, worker and server is a fresh Python process,
  # and compiling Prefect's sources at each start costs about 2.5 s (more where
  # PYTHONDONTWRITEBYTECODE keeps Python from caching it, as in many containers).
  uv_cmd sync --frozen --quiet --compile-bytecode
  .venv/bin/python -m compileall -q -j 0 pixelflow flows tasks bench >/dev/null
}

export PREFECT_SERVER_ANALYTICS_ENABLED=false

cmd=${1:-help}
shift || true
case "$cmd" in
  setup)
    if [ "${1:-}" = "--test" ]; then install_system "${APT_TEST[@]}"; else install_system "${APT_RUN[@]}"; fi
    install_python
    ;;
  up)
    apt_up=("${APT_RUN[@]}")
    case " $* ${PIXELFLOW_STACK_DATABASE:-} " in
      *" --database postgres "*|*" --database=postgres "*|*" postgres "*) apt_up+=(postgresql) ;;
    esac
    install_system "${apt_up[@]}"
    install_python
    exec .venv/bin/pixelflow stack up "$@"
    ;;
  down)
    exec .venv/bin/pixelflow stack down "$@"
    ;;
  test)
    install_system "${APT_TEST[@]}"
    install_python
    exec .venv/bin/python -m pytest --all "$@"  # every tier; a plain `pytest` runs the fast one
    ;;
  bench)
    install_system "${APT_RUN[@]}"
    install_python
    exec .venv/bin/python -m bench "$@"
    ;;
  *)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    ;;
esac
