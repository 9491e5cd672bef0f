#!/usr/bin/env bash
# Prepares a Debian/Ubuntu machine to run PetServe's WebGPU path (idempotent).
#
# Dawn (the `webgpu` npm package) needs a Vulkan driver. On a machine with a GPU
# driver already installed we change nothing. Without one we install the Vulkan
# loader and Mesa's lavapipe (CPU) driver. Bookworm's own Mesa 22 lavapipe is
# refused by Dawn, so on bookworm we take Mesa 25 from bookworm-backports, from the
# same mirror and keyring as the system's own bookworm source (no host is named here).
#
# Also installs the tools the test suite shells out to when missing:
# redis-server, promtool, chromium, docker-compose, haproxy.
#
# Usage: bash scripts/setup-system.sh [--vulkan-only]
#   Run as root, or as a user with sudo: the script re-runs itself under sudo.
#   --vulkan-only installs just the Vulkan driver (what a serving image needs).
set -euo pipefail

vulkan_only=0
for arg in "$@"; do
  case "$arg" in
    --vulkan-only) vulkan_only=1 ;;
    *) printf '[setup-system] unknown option: %s (usage: setup-system.sh [--vulkan-only])\n' "$arg" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E bash "$0" "$@"
  fi
  printf '[setup-system] must run as root: this user is not root and sudo is not installed\n' >&2
  exit 1
fi

log() { printf '[setup-system] %s\n' "$*"; }

have_gpu_icd() {
  # A Vulkan ICD manifest that Mesa's package does not own means a GPU vendor's
  # driver (NVIDIA's, AMD's proprietary one...). Mesa's own manifests (intel,
  # radeon, lvp...) come with mesa-vulkan-drivers whether or not such a GPU exists.
  local d f mesa_files
  mesa_files=$(dpkg -L mesa-vulkan-drivers 2>/dev/null || true)
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d; do
    [ -d "$d" ] || continue
    for f in "$d"/*.json; do
      [ -f "$f" ] || continue
      if ! printf '%s\n' "$mesa_files" | grep -qxF "$f"; then return 0; fi
    done
  done
  return 1
}

lavapipe_ok() {
  # lavapipe's manifest present and Mesa >= 23 (Dawn refuses older lavapipe).
  # (Mesa 22 names it lvp_icd.<arch>.json, Mesa 25 lvp_icd.json.)
  ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || return 1
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)
  local major=${v%%.*}; major=${major##*:}
  [ "${major:-0}" -ge 23 ] 2>/dev/null
}

if [ ! -f /etc/debian_version ]; then
  log "not a Debian/Ubuntu system; install a Vulkan driver (Mesa >= 23 lavapipe or a GPU driver) yourself"
  exit 0
fi

. /etc/os-release
codename=${VERSION_CODENAME:-}


# debian_source_of, apt_has_suite (read the system's own apt sources).
. "$(dirname "$0")/apt-sources.sh"

apt_updated=0
apt_update() { if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi; }

if have_gpu_icd; then
  log "a GPU Vulkan driver is installed; leaving Vulkan packages unchanged"
elif lavapipe_ok && ldconfig -p | grep -q libvulkan.so.1; then
  log "Vulkan loader and Mesa lavapipe (>= 23) already installed"
else
  if [ "$codename" = "bookworm" ]; then
    src="$apt_etc"/sources.list.d/bookworm-backports.sources
    if [ ! -f "$src" ] && ! apt_has_suite bookworm-backports; then
      read -r uris keyring < <(debian_source_of bookworm) || true
      if [ -z "${uris:-}" ]; then
        log "no apt source for suite 'bookworm' found in $apt_etc/sources.list or $apt_etc/sources.list.d/;"
        log "add one (or a bookworm-backports source) and run again"
        exit 1
      fi
      log "adding $src (URIs: $uris, keyring: ${keyring:-apt default})"
      {
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n' "$uris"
        if [ -n "${keyring:-}" ]; then printf 'Signed-By: %s\n' "$keyring"; fi
      } > "$src"
    fi
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
  log "installed: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
fi

if [ $vulkan_only = 1 ]; then log "done (--vulkan-only)"; exit 0; fi

# install_tool COMMAND PACKAGE [SERVICE]: install PACKAGE (without recommends) when
# COMMAND is missing. Where systemd runs, SERVICE (which the package would start) is
# disabled: a test machine wants the binary, not a running daemon.
install_tool() {
  local cmd=$1 pkg=$2 service=${3:-}
  command -v "$cmd" >/dev/null 2>&1 && return 0
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  if [ -n "$service" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
  log "installed $pkg ($cmd)"
}

# Redis: the queue and catalog tests (.ci/run starts one if none answers).
install_tool redis-server redis-server
# Observability and deployment checks (test/metrics, test/deploy, test/status):
#   promtool (package `prometheus`) validates the /metrics exposition, prometheus.yml,
#     the alert rules and every Grafana panel query;
#   chromium renders the status page headless (driven by playwright-core);
#   docker-compose (v1, Python) validates docker-compose.yml without a Docker daemon;
#   haproxy runs configs/haproxy/ in test/deploy/haproxy.test.ts and test/server/cluster.test.ts.
install_tool promtool prometheus prometheus
install_tool chromium chromium
install_tool docker-compose docker-compose
install_tool haproxy haproxy haproxy
log "done"
