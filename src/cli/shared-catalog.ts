import { basename } from 'node:path';
import { DirectoryBlobStore } from '../catalog/blob-store.js';
import { CatalogSync } from '../catalog/catalog-sync.js';
import { TaskCatalog } from '../catalog/task-catalog.js';
import type { PetServeConfig } from '../config/config.js';
import type { TaskRegistry } from '../pet/registry.js';
import { createRedis } from '../queue/redis.js';
import type { Logger } from '../util/logger.js';

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
): Promise<OpenedCatalog | null> {
  const blobDir = config.catalog.blobDir;
  if (blobDir === null) return null;
  const redis = createRedis(config.redis.url, 'api', { name: `${config.catalog.prefix}:catalog`, logger });
  const sync = new CatalogSync(new TaskCatalog(redis, config.catalog.prefix), new DirectoryBlobStore(blobDir), registry, {
    cacheDir: config.catalog.cacheDir,
    baseModel: basename(modelDir),
    logger,
  });
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
