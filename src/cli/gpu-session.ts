import type { PetServeConfig } from '../config/config.js';
import { GpuContext } from '../gpu/context.js';
import type { Logger } from '../util/logger.js';

/** Open the GPU described by the config, run `fn`, and always destroy the device so the process can exit. */
export async function withGpu<T>(config: PetServeConfig, logger: Logger, fn: (ctx: GpuContext) => Promise<T>): Promise<T> {
  const ctx = await GpuContext.create(
    {
      backend: config.gpu.backend ?? undefined,
      adapter: config.gpu.adapter ?? undefined,
      powerPreference: config.gpu.powerPreference,
      dawnToggles: config.gpu.dawnToggles,
    },
    logger,
  );
  try {
    return await fn(ctx);
  } finally {
    ctx.destroy();
  }
}
