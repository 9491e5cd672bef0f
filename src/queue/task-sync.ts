import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { TaskExistsError, type TaskRegistry } from '../pet/registry.js';
import { PetServeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

/**
 * Keeps a worker process's task registry in step with the task directories it
 * shares with the server (server.tasksDir, server.uploadDir): a task uploaded
 * to the server after the worker started is registered on its first item; a
 * task whose directory was removed (deleted through the server) is dropped,
 * so its items fail alone with TASK_NOT_FOUND instead of running a PET the
 * server no longer serves. Tasks registered from anywhere else are left alone.
 */
export class WorkerTaskSync {
  private readonly roots: string[];
  /** When each task id was last compared with its directory. */
  private readonly checkedAt = new Map<string, number>();
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly registry: TaskRegistry,
    roots: readonly (string | null)[],
    private readonly logger: Logger,
    /** One stat per task per interval: items of a chunk come in hundreds. */
    private readonly recheckMs = 2000,
  ) {
    this.roots = roots.filter((r): r is string => r !== null).map((r) => resolve(r));
  }

  /** Make the registry agree with the directories about `id`; never throws for a task that stays unknown. */
  sync(id: string): Promise<void> {
    const last = this.checkedAt.get(id);
    if (last !== undefined && Date.now() - last < this.recheckMs) return Promise.resolve();
    let p = this.inFlight.get(id);
    if (!p) {
      p = this.compare(id).finally(() => {
        this.inFlight.delete(id);
        this.checkedAt.set(id, Date.now());
      });
      this.inFlight.set(id, p);
    }
    return p;
  }

  private async compare(id: string): Promise<void> {
    // Ids reach here from clients: only plain names may become paths.
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id)) return;
    const candidates = this.roots.map((r) => join(r, id));
    const info = this.registry.get(id);
    if (info) {
      if (!candidates.includes(resolve(info.source))) return;
      if (await isDirectory(info.source)) return;
      this.logger.info({ task: id, dir: info.source }, 'task directory removed: task dropped from this worker');
      await this.registry.unregister(id).catch(() => undefined);
      return;
    }
    for (const dir of candidates) {
      if (!(await isDirectory(dir))) continue;
      try {
        await this.registry.register(id, dir);
        this.logger.info({ task: id, dir }, 'task registered on first use by this worker');
      } catch (err) {
        if (err instanceof TaskExistsError) return;
        // An invalid PET stays unknown here; its items fail with TASK_NOT_FOUND and the reason is logged.
        if (err instanceof PetServeError) this.logger.error({ task: id, dir, err: err.message }, 'task directory could not be registered');
        else throw err;
      }
      return;
    }
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
