import { basename } from 'node:path';
import { DirectoryBlobStore } from '../catalog/blob-store.js';
import { CatalogSync, type LocalTasks } from '../catalog/catalog-sync.js';
import { TaskCatalog } from '../catalog/task-catalog.js';
import type { PetServeConfig } from '../config/config.js';
import type { TaskRegistry } from '../pet/registry.js';
import { createRedis } from '../queue/redis.js';
import type { ServedGeneration } from '../runtime/served-generation.js';
import type { Logger } from '../util/logger.js';

/** The catalog's view of a served decoder's adapters (what openSharedCatalog's `decoder` takes). */
export function decoderCatalogTarget(generation: ServedGeneration | null): { baseModel: string; local: LocalTasks } | null {
  if (!generation) return null;
  const tasks = generation.tasks;
  return {
    baseModel: generation.modelId,
    local: { register: (id, dir) => tasks.register(id, dir), unregister: async (id) => tasks.unregister(id), has: (id) => tasks.get(id) !== undefined },
  };
}

export interface OpenedCatalog {
  sync: CatalogSync;
  close(): Promise<void>;
}

/**
 * The shared task catalog of this process (api replica or worker) when
 * config catalog.blobDir is set; null otherwise. Its Redis connection fails
 * fast ('api' role), so a request never waits on a Redis that is down: the
 * sync serves what this process holds and registration answers 503.
 */
export async function openSharedCatalog(
  config: PetServeConfig,
  registry: TaskRegistry,
  modelDir: string,
  logger: Logger,
  /** A decoder served beside the encoder: the catalog's tasks for it go to its adapter registry. */
  decoder?: { baseModel: string; local: LocalTasks } | null,
): Promise<OpenedCatalog | null> {
  const blobDir = config.catalog.blobDir;
  if (blobDir === null) return null;
  const redis = createRedis(config.redis.url, 'api', { name: `${config.catalog.prefix}:catalog`, logger });
  const sync = new CatalogSync(new TaskCatalog(redis, config.catalog.prefix), new DirectoryBlobStore(blobDir), registry, {
    cacheDir: config.catalog.cacheDir,
    baseModel: basename(modelDir),
    logger,
  });
  if (decoder) sync.addBase(decoder.baseModel, decoder.local);
  await sync.start();
  logger.info({ blobDir, cacheDir: config.catalog.cacheDir }, 'shared task catalog on');
  return {
    sync,
    close: async () => {
      await sync.stop();
      redis.disconnect();
    },
  };
}
