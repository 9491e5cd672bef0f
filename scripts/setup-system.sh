#!/usr/bin/env bash
# Prepares a Debian/Ubuntu machine to run PetServe's WebGPU path (idempotent).
#
# Dawn (the `webgpu` npm package) needs a Vulkan driver. On a machine with a GPU
# driver already installed we change nothing. Without one we install the Vulkan
# loader and Mesa's lavapipe (CPU) driver. Bookworm's own Mesa 22 lavapipe is
# refused by Dawn, so on bookworm we take Mesa 25 from bookworm-backports.
#
# Also installs the tools the test suite shells out to when missing:
# redis-server, promtool, chromium, docker-compose. Run as root (or with sudo
# available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

log() { printf '[setup-system] %s\n' "$*"; }

have_gpu_icd() {
  # Any non-lavapipe ICD manifest means a real Vulkan driver is present.
  local d
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d; do
    [ -d "$d" ] || continue
    if ls "$d" 2>/dev/null | grep -v -i lvp | grep -q '\.json$'; then return 0; fi
  done
  return 1
}

lavapipe_ok() {
  # lavapipe's manifest present and Mesa >= 23 (Dawn refuses older lavapipe).
  [ -f /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || return 1
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

apt_updated=0
apt_update() { if [ $apt_updated = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi; }

if have_gpu_icd; then
  log "a GPU Vulkan driver is installed; leaving Vulkan packages unchanged"
elif lavapipe_ok && ldconfig -p | grep -q libvulkan.so.1; then
  log "Vulkan loader and Mesa lavapipe (>= 23) already installed"
else
  if [ "$codename" = "bookworm" ]; then
    src=/etc/apt/sources.list.d/bookworm-backports.sources
    if [ ! -f "$src" ]; then
      # Same mirror and keyring as the system's bookworm source.
      uris=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      uris=${uris:-http://deb.debian.org/debian}
      log "adding $src ($uris)"
      $SUDO tee "$src" >/dev/null <<SRC
Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    apt_update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    apt_update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
  log "installed: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  log "installed redis-server"
fi

# Observability and deployment checks (test/metrics, test/deploy, test/status):
#   promtool (package `prometheus`) validates the /metrics exposition, prometheus.yml,
#     the alert rules and every Grafana panel query;
#   chromium renders the status page headless (driven by playwright-core);
#   docker-compose (v1, Python) validates docker-compose.yml without a Docker daemon.
if ! command -v promtool >/dev/null 2>&1; then
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Only promtool is wanted: where systemd runs, the package also starts a
  # Prometheus server on :9090, which a test machine does not need.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  log "installed promtool ($(promtool --version 2>&1 | head -n1))"
fi
if ! command -v chromium >/dev/null 2>&1; then
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
  log "installed chromium"
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  log "installed docker-compose"
fi
log "done"
