// Task management behind the admin routes, free of HTTP: register from an
// uploaded archive or a confined server path, unregister (and remove what we
// unpacked). A refused task leaves no files and no registry entry behind.

import { mkdir, mkdtemp, readdir, realpath, rename, rm } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { DecoderTaskInfo } from '../pet/decoder-registry.js';
import { BaseModelError, TaskExistsError, UnknownTaskError, type TaskInfo, type TaskRegistry } from '../pet/registry.js';
import { PetFormatError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { DEFAULT_MAX_ARCHIVE_ENTRIES, extractPetArchive } from './bundle-archive.js';
import { FeatureDisabledError, PathOutsideRootError, RequestValidationError } from './errors.js';

const INCOMING_DIR = '.incoming';
const STAGING_PREFIX = '.staging-';

/**
 * Remove what a crash mid-upload left in `uploadDir`: received archives in
 * `.incoming/` and half-unpacked `.staging-*` directories. Run at start-up,
 * before the server accepts uploads (uploadDir belongs to one server process).
 * Returns the removed names, relative to uploadDir, which it also logs.
 */
export async function removeStaleUploads(uploadDir: string, logger: Logger): Promise<string[]> {
  const root = resolve(uploadDir);
  const stale: string[] = [];
  const list = async (dir: string): Promise<string[]> => {
    try {
      return await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  };
  for (const name of await list(join(root, INCOMING_DIR))) stale.push(join(INCOMING_DIR, name));
  for (const name of await list(root)) if (name.startsWith(STAGING_PREFIX)) stale.push(name);
  for (const rel of stale) await rm(join(root, rel), { recursive: true, force: true });
  if (stale.length > 0) logger.info({ uploadDir: root, removed: stale }, 'removed uploads left by an earlier run');
  return stale;
}

/**
 * The shared task catalog (src/catalog's CatalogSync fits) when several
 * replicas serve: what one registers or deletes, all do.
 */
export interface SharedCatalog {
  /**
   * Add a task this process has just registered from `dir` for `baseModel` (default:
   * the encoder); refusals: TASK_EXISTS, CATALOG_UNAVAILABLE.
   */
  publish(id: string, dir: string, kind: string, opts?: { baseModel?: string }): Promise<unknown>;
  /** Remove a task everywhere; UnknownTaskError when the catalog does not hold it. */
  withdraw(id: string): Promise<unknown>;
}

/**
 * The decoder served beside the encoder (generation.modelDir): its adapters
 * register and unregister through the same admin API, named by the `model`
 * they are for, in the one namespace of ids every model of the server shares.
 */
export interface DecoderTasks {
  /** The decoder base's id (generation.modelId): what a registration names as its `model`. */
  baseModelId: string;
  /** Where uploaded adapters are kept (registered again at the next start). */
  uploadDir: string;
  get(id: string): DecoderTaskInfo | undefined;
  /** Refuse a malformed id or one in use by any model of the server. */
  checkNewId(id: string): void;
  register(id: string, dir: string): Promise<DecoderTaskInfo>;
  /** New sequences get 404 at once; running ones finish on the adapter they started with. */
  unregister(id: string): void;
  /** Every adapter with its footprint and residency in the device's PET pool (GET /v1/tasks). */
  list(): DecoderTaskListing[];
}

/** A decoder adapter as GET /v1/tasks shows it. */
export interface DecoderTaskListing extends DecoderTaskInfo {
  /** Bytes it takes in the device's PET pool (shared with the encoder's tasks) when resident (serving dtype). */
  gpuBytes: number;
  resident: boolean;
}

export interface TaskAdminOptions {
  uploadDir: string;
  registerRoot: string | null;
  maxUploadBytes: number;
  logger: Logger;
  /** Set when replicas share a catalog (config catalog.blobDir). */
  catalog?: SharedCatalog | null;
  /** Set when the server runs a decoder. */
  decoder?: DecoderTasks | null;
}

/** A task as registered: an encoder PET or a decoder adapter. */
export type RegisteredTask = { model: 'encoder'; info: TaskInfo } | { model: 'decoder'; info: DecoderTaskInfo };

/** True when `child` is `root` or lies below it (both absolute, resolved). */
function isInside(root: string, child: string): boolean {
  const rel = relative(root, child);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

export class TaskAdmin {
  private readonly uploadDir: string;

  constructor(
    private readonly registry: TaskRegistry,
    private readonly opts: TaskAdminOptions,
  ) {
    this.uploadDir = resolve(opts.uploadDir);
  }

  /** Where uploads are received before unpacking (same filesystem as uploadDir, so renames are atomic). */
  async incomingDir(): Promise<string> {
    const dir = join(this.uploadDir, INCOMING_DIR);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /**
   * Which base a registration is for: `model` unset or the encoder's id → the
   * encoder; the decoder's id → the decoder. Anything else is refused before
   * any work (a task id is not a base: PETs do not stack).
   */
  private targetOf(model: string | undefined): DecoderTasks | null {
    if (model === undefined || model === this.registry.baseModelId) return null;
    const decoder = this.opts.decoder;
    if (decoder && model === decoder.baseModelId) return decoder;
    const bases = [this.registry.baseModelId, ...(decoder ? [decoder.baseModelId] : [])].map((b) => `'${b}'`).join(' or ');
    throw new RequestValidationError(`invalid request: model: not a base model of this server; a task registers for ${bases}`);
  }

  /** Unpack `archive` into uploadDir/<id> (a decoder adapter: the decoder's upload directory) and register it; `id` must already match the task id pattern. */
  async registerArchive(id: string, archive: string, model?: string): Promise<RegisteredTask> {
    const decoder = this.targetOf(model);
    if (decoder) decoder.checkNewId(id);
    else this.registry.checkNewId(id);
    await mkdir(this.uploadDir, { recursive: true });
    const staging = await mkdtemp(join(this.uploadDir, STAGING_PREFIX));
    const finalParent = decoder ? resolve(decoder.uploadDir) : this.uploadDir;
    const finalDir = join(finalParent, id);
    let placed = false;
    try {
      const petDir = await extractPetArchive(archive, staging, {
        maxUnpackedBytes: this.opts.maxUploadBytes,
        maxEntries: DEFAULT_MAX_ARCHIVE_ENTRIES,
      });
      try {
        if (decoder) await mkdir(finalParent, { recursive: true });
        await rename(petDir, finalDir);
        placed = true;
      } catch (err) {
        // A non-empty uploadDir/<id>: another upload of this id won the race (or a leftover).
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new TaskExistsError(id);
        throw err;
      }
      const task = await this.registerDir(id, finalDir, decoder);
      this.opts.logger.info({ task: id, dir: finalDir, model: decoder?.baseModelId ?? this.registry.baseModelId }, 'task registered from upload');
      return task;
    } catch (err) {
      if (placed) await rm(finalDir, { recursive: true, force: true });
      throw err;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  /** Register a PET directory on the server, which must resolve (symlinks followed) inside server.registerRoot. */
  async registerPath(id: string, path: string, model?: string): Promise<RegisteredTask> {
    const decoder = this.targetOf(model);
    if (this.opts.registerRoot === null) {
      throw new FeatureDisabledError('registration from server paths is disabled: set server.registerRoot (PETSERVE_REGISTER_ROOT)');
    }
    const root = await realpath(this.opts.registerRoot);
    const candidate = resolve(root, path);
    // Lexical check first, so a path outside the root is refused the same way whether it exists or not.
    if (!isInside(root, candidate)) throw new PathOutsideRootError();
    let real: string;
    try {
      real = await realpath(candidate);
    } catch (err) {
      throw new PetFormatError('the path does not exist under server.registerRoot', { cause: err });
    }
    if (!isInside(root, real)) throw new PathOutsideRootError();
    const task = await this.registerDir(id, real, decoder);
    this.opts.logger.info({ task: id, dir: real, model: decoder?.baseModelId ?? this.registry.baseModelId }, 'task registered from server path');
    return task;
  }

  /** Register `dir` with its base, then publish it to the shared catalog (if any) under that base. */
  private async registerDir(id: string, dir: string, decoder: DecoderTasks | null): Promise<RegisteredTask> {
    if (decoder) {
      const info = await decoder.register(id, dir);
      await this.publishOrUndo(id, dir, info.kind, decoder.baseModelId, async () => decoder.unregister(id));
      return { model: 'decoder', info };
    }
    const info = await this.registry.register(id, dir);
    await this.publishOrUndo(id, dir, info.kind, undefined, () => this.registry.unregister(id));
    return { model: 'encoder', info };
  }

  /**
   * With a shared catalog, a task exists once the catalog holds it: if the
   * catalog refuses (the id is taken on another replica, Redis is down), the
   * local registration is undone, so nothing is half-registered.
   */
  private async publishOrUndo(id: string, dir: string, kind: string, baseModel: string | undefined, undo: () => Promise<void>): Promise<void> {
    const catalog = this.opts.catalog;
    if (!catalog) return;
    try {
      await catalog.publish(id, dir, kind, baseModel === undefined ? {} : { baseModel });
    } catch (err) {
      await undo().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Unregister (waits for the task's in-flight batches); files are removed only
   * if we unpacked them. With a shared catalog the task is withdrawn there first
   * (every replica drops it); a task this replica registered from its own tasks
   * directory is not in the catalog and is removed here alone.
   */
  async unregister(id: string): Promise<{ id: string }> {
    if (id === this.registry.baseModelId || id === this.opts.decoder?.baseModelId) throw new BaseModelError(id);
    // Read before withdrawing: the catalog's delete event may drop the local entry meanwhile.
    const decoder = this.opts.decoder;
    const adapter = decoder?.get(id);
    const info = adapter ? undefined : this.registry.get(id);
    const catalog = this.opts.catalog;
    if (catalog) {
      try {
        await catalog.withdraw(id);
      } catch (err) {
        if (!(err instanceof UnknownTaskError) || (!info && !adapter)) throw err;
      }
    } else if (!info && !adapter) {
      throw new UnknownTaskError(id);
    }
    if (decoder && adapter) {
      try {
        decoder.unregister(id);
      } catch (err) {
        if (!(err instanceof UnknownTaskError)) throw err;
      }
      // Files are removed only if an upload put them there (not an operator's generation.tasksDir).
      const ownDir = join(resolve(decoder.uploadDir), id);
      if (resolve(adapter.dir) === ownDir) await rm(ownDir, { recursive: true, force: true });
      return { id };
    }
    // Withdrawn from the catalog but never fetched by this replica: nothing local to remove.
    if (!info) return { id };
    await this.registry.unregister(id).catch((err: unknown) => {
      if (!(err instanceof UnknownTaskError)) throw err;
    });
    const ownDir = join(this.uploadDir, id);
    if (resolve(info.source) === ownDir) await rm(ownDir, { recursive: true, force: true });
    return { id };
  }
}
