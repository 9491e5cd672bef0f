#!/usr/bin/env bash
# Fills .carry/ (git-ignored) with what scripts/gpu-check.sh needs on a GPU
# machine that may have neither Node nor the Vulkan loader and no network:
#   .carry/node.xz               this machine's node binary (`which node`), xz-compressed
#   .carry/node_modules.tar.xz   node_modules, pruned to linux-x64 and to what tests and benches load
#   .carry/debs/*.deb            the Vulkan loader (libvulkan1) from apt, for dpkg -i
# Run from anywhere after `npm ci`; needs xz, tar and apt-get (download only, no root).
# The pruned tarball keeps the carry small (a device call carries at most 64 MiB).
#
#   scripts/prepare-carry.sh            # then: du -sh .carry/*
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$ROOT/.carry"
cd "$ROOT"

die() { echo "prepare-carry: $*" >&2; exit 1; }
[[ -d node_modules ]] || die "no node_modules in $ROOT: run npm ci first"
command -v xz >/dev/null || die "xz is not installed"
NODE_BIN="$(command -v node)" || die "node is not on PATH"

mkdir -p "$CARRY/debs"

echo "prepare-carry: node $("$NODE_BIN" --version) from $NODE_BIN"
xz -T0 -6 -c "$NODE_BIN" > "$CARRY/node.xz.tmp" && mv "$CARRY/node.xz.tmp" "$CARRY/node.xz"

# What the GPU check never loads: other platforms' native binaries, source
# maps, ONNX Runtime Web builds other than the WebGPU bundle (and its
# asyncify WASM), and dev tools for typechecking, linting and deployment tests.
EXCLUDES=(
  --exclude='*.map'
  --exclude='node_modules/webgpu/dist/darwin-*'
  --exclude='node_modules/webgpu/dist/win32-*'
  --exclude='node_modules/webgpu/dist/linux-arm64'
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin'
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32'
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64'
  --exclude='node_modules/onnxruntime-web/dist/ort.all*'
  --exclude='node_modules/onnxruntime-web/dist/ort.wasm*'
  --exclude='node_modules/onnxruntime-web/dist/ort.webgl*'
  --exclude='node_modules/onnxruntime-web/dist/ort.jspi*'
  --exclude='node_modules/onnxruntime-web/dist/ort.min*'
  --exclude='node_modules/onnxruntime-web/dist/ort.bundle*'
  --exclude='node_modules/onnxruntime-web/dist/ort.js'
  --exclude='node_modules/onnxruntime-web/dist/ort.mjs'
  --exclude='node_modules/onnxruntime-web/dist/ort.node*'
  --exclude='node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm'
  --exclude='node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs'
  --exclude='node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.jsep.*'
  --exclude='node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.jspi.*'
  --exclude='node_modules/onnxruntime-web/lib'
  --exclude='node_modules/typescript'
  --exclude='node_modules/eslint'
  --exclude='node_modules/@eslint'
  --exclude='node_modules/typescript-eslint'
  --exclude='node_modules/@typescript-eslint'
  --exclude='node_modules/playwright-core'
  --exclude='node_modules/kubernetes-models'
  --exclude='node_modules/@kubernetes-models'
  --exclude='node_modules/dependency-cruiser'
  --exclude='node_modules/openai'
  --exclude='node_modules/@types'
  --exclude='node_modules/@webgpu/types'
)
echo "prepare-carry: packing node_modules"
tar -C "$ROOT" "${EXCLUDES[@]}" -cf - node_modules | xz -T0 -6 > "$CARRY/node_modules.tar.xz.tmp"
mv "$CARRY/node_modules.tar.xz.tmp" "$CARRY/node_modules.tar.xz"

echo "prepare-carry: downloading the Vulkan loader (libvulkan1)"
rm -f "$CARRY"/debs/*.deb
(cd "$CARRY/debs" && apt-get download libvulkan1) || die "apt-get download libvulkan1 failed (run apt-get update?)"

du -sh "$CARRY"/node.xz "$CARRY"/node_modules.tar.xz "$CARRY"/debs/*.deb
total_kib=$(du -sk "$CARRY/node.xz" "$CARRY/node_modules.tar.xz" "$CARRY"/debs/*.deb | awk '{s+=$1} END {print s}')
echo "prepare-carry: $((total_kib / 1024)) MiB in all"
if (( total_kib > 64 * 1024 )); then
  echo "prepare-carry: warning: more than 64 MiB; a device call may refuse to carry it" >&2
fi
