import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, PetServeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export interface TaskDirScan {
  registered: string[];
  /** Subdirectories that were not registered, with the reason (only when `onInvalid` is 'skip'). */
  skipped: { id: string; reason: string }[];
}

/**
 * Register every subdirectory of `root` as a task named after it. Hidden
 * entries (staging directories of uploads in progress) are ignored.
 * `onInvalid: 'fail'` stops at the first invalid PET (an operator's tasks
 * directory: better to refuse to start than to serve half of it);
 * 'skip' logs and continues (uploads that were valid once but may no longer
 * fit, e.g. after the base model changed).
 */
export async function registerTaskDirectories(
  registry: { register(id: string, dir: string): Promise<unknown> },
  root: string,
  opts: { logger: Logger; onInvalid: 'fail' | 'skip'; missingOk?: boolean },
): Promise<TaskDirScan> {
  const names = await taskDirectoryNames(root, opts.missingOk ?? false);
  const scan: TaskDirScan = { registered: [], skipped: [] };
  for (const id of names) {
    try {
      await registry.register(id, join(root, id));
      scan.registered.push(id);
    } catch (err) {
      if (!(err instanceof PetServeError)) throw err;
      if (opts.onInvalid === 'fail') {
        // PET loaders name files relative to the PET directory; say which task it was (class and code unchanged).
        err.message = `task '${id}': ${err.message}`;
        throw err;
      }
      opts.logger.error({ task: id, dir: join(root, id), err: err.message }, 'task directory not registered');
      scan.skipped.push({ id, reason: err.message });
    }
  }
  return scan;
}

/** The task subdirectories of `root` (hidden ones skipped), sorted; [] for a missing root when `missingOk`. */
export async function taskDirectoryNames(root: string, missingOk = false): Promise<string[]> {
  try {
    const entries = await readdir(root, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && missingOk) return [];
    throw new ConfigError(`cannot read tasks directory ${root}: ${(err as Error).message}`, { cause: err });
  }
}
