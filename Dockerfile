# PetServe image: the API server (`petserve serve`, default) and queue workers
# (`petserve worker`) from one image. Used by docker-compose.yml.
#
# GPU: the image carries the Vulkan loader and Mesa's lavapipe, a CPU Vulkan
# driver, so it runs anywhere (slowly: ~10 GFLOP/s). On an NVIDIA host, install
# the NVIDIA Container Toolkit and start the container with the GPU and the
# *graphics* driver capability (Vulkan is a graphics API; "compute,utility"
# alone mounts no Vulkan ICD):
#   docker run --gpus all -e NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics petserve
# (docker-compose.yml shows the same as a device reservation). The toolkit
# mounts the driver's Vulkan ICD (nvidia_icd.json), the loader then prefers the
# GPU over lavapipe; set PETSERVE_GPU_ADAPTER=nvidia to refuse a fallback.

# ---- build: compile TypeScript, then keep production dependencies only -------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` runs `prepare` (= npm run build, tsc into dist/), so sources come first.
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime -----------------------------------------------------------------
FROM node:20-bookworm-slim
# Dawn refuses bookworm's own Mesa 22 lavapipe; scripts/setup-system.sh adds
# bookworm-backports (Mesa 25) from the image's own apt source and installs the
# loader (libvulkan1, which also finds a mounted GPU driver's ICD) and lavapipe.
COPY scripts/setup-system.sh scripts/apt-sources.sh /tmp/setup/
RUN bash /tmp/setup/setup-system.sh --vulkan-only \
 && rm -rf /var/lib/apt/lists/* /tmp/setup

ENV NODE_ENV=production \
    PETSERVE_HOST=0.0.0.0 \
    PETSERVE_PORT=8080 \
    XDG_RUNTIME_DIR=/tmp/petserve-xdg
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
# Read at run time relative to the package root: WGSL kernels, status page, default config.
COPY shaders ./shaders
COPY static ./static
COPY configs ./configs
# .cache holds the demo model, uploaded tasks and the profiled cost model
# (server.demoDir, server.uploadDir, scheduler.costCacheDir); docker-compose
# mounts a volume here, which takes this directory's owner.
RUN mkdir -p /app/.cache /data/models /data/tasks /tmp/petserve-xdg \
 && chown -R node:node /app/.cache /tmp/petserve-xdg \
 && chmod 700 /tmp/petserve-xdg
USER node

# 8080: API (/v1, /v2, /metrics, status page). 9464: a worker's /metrics and /healthz.
EXPOSE 8080 9464
# Ready = the API answers /v2/health/ready (503 while draining). Workers override it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PETSERVE_PORT || 8080) + '/v2/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/petserve.js"]
CMD ["serve"]
