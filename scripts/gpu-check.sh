#!/usr/bin/env bash
# One-call GPU check: on a machine with a GPU and Vulkan (NVIDIA's ICD is looked
# for at /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json), run the
# GPU-relevant tests and the kernel, peer, PET and scheduler benchmarks with
# short settings in under ~8 minutes, and write every result to $OUT.
#
#   OUT=/path/to/results scripts/gpu-check.sh      (default OUT: ./gpu-check-out)
#
# The machine may lack Node, node_modules and the Vulkan loader: then carry
# them in .carry/ (scripts/prepare-carry.sh fills it):
#   .carry/node.xz               node binary, xz-compressed
#   .carry/node_modules.tar.xz   node_modules tarball (used when ./node_modules is missing)
#   .carry/debs/*.deb            Vulkan loader packages (dpkg -i as root, else unpacked with dpkg -x)
# Environment: OUT, PETSERVE_GPU_ADAPTER (adapter name filter), GPU_CHECK_BUDGET_S (default 470).
# Each step runs under `timeout` within what is left of the budget; a step that
# fails or times out is recorded in $OUT/summary.md and the next one still runs.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu-check-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export OUT
CARRY="$ROOT/.carry"
BUDGET_S="${GPU_CHECK_BUDGET_S:-470}"
START_S=$SECONDS
SUMMARY="$OUT/summary.md"
LOG="$OUT/gpu-check.log"
: > "$LOG"

log() { echo "[gpu-check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
left_s() { echo $(( BUDGET_S - (SECONDS - START_S) )); }

{
  echo "# GPU check"
  echo
  echo "- started: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- host: $(uname -srm); cpus: $(nproc)"
  echo
  echo "| step | status | seconds | output |"
  echo "| --- | --- | ---: | --- |"
} > "$SUMMARY"

# ------------------------------------------------------------------ environment

# xz -dc, or Python's lzma where xz-utils is missing.
unxz_cat() {
  if command -v xz >/dev/null; then xz -dc "$1"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi
}

setup_node() {
  if command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    return 0
  fi
  if [[ -f "$CARRY/node.xz" ]]; then
    mkdir -p "$CARRY/bin"
    unxz_cat "$CARRY/node.xz" > "$CARRY/bin/node" && chmod +x "$CARRY/bin/node"
    export PATH="$CARRY/bin:$PATH"
    log "node from .carry/node.xz: $(node --version)"
    return 0
  fi
  log "no node >= 20 on PATH and no .carry/node.xz"
  return 1
}

setup_node_modules() {
  if [[ -d node_modules/webgpu && -d node_modules/vitest ]]; then return 0; fi
  if [[ -f "$CARRY/node_modules.tar.xz" ]]; then
    log "unpacking .carry/node_modules.tar.xz"
    unxz_cat "$CARRY/node_modules.tar.xz" | tar -xf - -C "$ROOT"
    return $?
  fi
  log "no node_modules and no .carry/node_modules.tar.xz"
  return 1
}

have_vulkan_loader() {
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || [[ -n "${LD_LIBRARY_PATH:-}" && -n "$(find ${LD_LIBRARY_PATH//:/ } -maxdepth 1 -name 'libvulkan.so.1' 2>/dev/null | head -1)" ]]
}

setup_vulkan() {
  if ! have_vulkan_loader && compgen -G "$CARRY/debs/*.deb" >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v dpkg >/dev/null; then
      log "installing the carried Vulkan loader: $(ls "$CARRY"/debs/*.deb | xargs -n1 basename | tr '\n' ' ')"
      dpkg -i "$CARRY"/debs/*.deb >>"$LOG" 2>&1 || log "dpkg -i failed (see gpu-check.log)"
    else
      # Not root: unpack the loader beside the carry and point the dynamic linker at it.
      mkdir -p "$CARRY/vulkan-root"
      for deb in "$CARRY"/debs/*.deb; do dpkg -x "$deb" "$CARRY/vulkan-root"; done
      export LD_LIBRARY_PATH="$CARRY/vulkan-root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      log "unpacked the carried Vulkan loader into .carry/vulkan-root"
    fi
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [[ -z "${VK_ICD_FILENAMES:-}" && -f "$icd" ]]; then
    export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd"
    log "Vulkan ICD: $icd"
  fi
  # The ICD names libGLX_nvidia.so.0 without a path; NVIDIA containers keep it here.
  if [[ -d /usr/local/nvidia/lib64 ]]; then
    export LD_LIBRARY_PATH="/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  have_vulkan_loader || log "warning: no libvulkan.so.1 found; Dawn will find no Vulkan adapter"
  # With Mesa also installed Dawn may list a software adapter; PetServe and the
  # peer must both run on the GPU.
  if [[ -z "${PETSERVE_GPU_ADAPTER:-}" ]] && command -v nvidia-smi >/dev/null; then
    export PETSERVE_GPU_ADAPTER=nvidia
  fi
}

# ------------------------------------------------------------------ steps

# step NAME CAP_S OUTPUT_NAME COMMAND...: runs COMMAND under timeout
# min(CAP_S, time left), stdout+stderr to $OUT/NAME.log, one summary row.
FAILED=0
step() {
  local name="$1" cap="$2"
  shift 2
  local left
  left=$(left_s)
  if (( left < 20 )); then
    log "$name: skipped (budget of ${BUDGET_S}s spent)"
    echo "| $name | skipped (budget spent) | 0 | |" >> "$SUMMARY"
    return 0
  fi
  local limit=$(( cap < left ? cap : left ))
  local cmd="$*"
  log "$name: up to ${limit}s: ${cmd:0:200}"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local took=$(( SECONDS - t0 ))
  local status="ok"
  if (( rc == 124 || rc == 137 )); then status="timed out at ${limit}s"; FAILED=1
  elif (( rc != 0 )); then status="failed (exit $rc)"; FAILED=1; fi
  log "$name: $status in ${took}s"
  echo "| $name | $status | $took | $name.log |" >> "$SUMMARY"
}

setup_node || { echo "| setup | failed: no node | 0 | gpu-check.log |" >> "$SUMMARY"; exit 1; }
setup_node_modules || { echo "| setup | failed: no node_modules | 0 | gpu-check.log |" >> "$SUMMARY"; exit 1; }
setup_vulkan
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

{ command -v nvidia-smi >/dev/null && nvidia-smi; } > "$OUT/nvidia-smi.txt" 2>&1 || true
{ command -v vulkaninfo >/dev/null && vulkaninfo --summary; } > "$OUT/vulkaninfo.txt" 2>&1 || true

TSX=(node --import tsx)
# Which adapter Dawn gives PetServe (what every later figure runs on).
step adapter 60 "${TSX[@]}" --input-type=module -e "
  const { GpuContext } = await import('./src/gpu/context.ts');
  const { silentLogger } = await import('./src/util/logger.ts');
  const ctx = await GpuContext.create({ adapter: process.env.PETSERVE_GPU_ADAPTER }, silentLogger);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(process.env.OUT + '/adapter.json', JSON.stringify(ctx.capabilities, null, 2) + '\n');
  console.log(ctx.capabilities.adapterName);
  ctx.destroy(); process.exit(0);"

# GPU-relevant tests: device layer, kernels against the float64 reference,
# the engine, PET kinds in mixed batches, scheduler/runtime on the device, ONNX export.
step tests 170 node node_modules/vitest/vitest.mjs run \
  test/gpu test/kernels test/engine test/reference test/model test/pet test/bench test/scheduler test/runtime \
  --reporter=default --reporter=junit --outputFile.junit="$OUT/tests-junit.xml"

step bench-kernels 90 "${TSX[@]}" bench/kernels.ts --quick --out "$OUT"
step bench-tune 60 "${TSX[@]}" bench/kernel-tune.ts --presets bert-mini,bert-base --rounds 3 --out "$OUT"
step bench-f16 40 "${TSX[@]}" bench/f16-fidelity.ts --out "$OUT"
step bench-peer 150 "${TSX[@]}" bench/peer.ts --out "$OUT" --rounds 2 --budget-s 110 \
  --max-tokens bert-mini=16384,bert-base=4096 --ragged bert-mini=64,bert-base=32
step bench-pets 60 "${TSX[@]}" bench/pets.ts --quick --out "$OUT"
step bench-scheduler 60 "${TSX[@]}" bench/scheduler.ts tasks --quick --out "$OUT"

{
  echo
  echo "- finished: $(date -u +%Y-%m-%dT%H:%M:%SZ) after $(( SECONDS - START_S ))s (budget ${BUDGET_S}s)"
  echo "- results: $(cd "$OUT" && ls | grep -E '\.(json|md|svg|xml)$' | grep -v '^summary.md$' | tr '\n' ' ')"
} >> "$SUMMARY"
log "done in $(( SECONDS - START_S ))s; results in $OUT"
cat "$SUMMARY"
exit "$FAILED"
