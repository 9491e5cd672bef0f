import { mkdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PetServeError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import type { Logger } from '../util/logger.js';
import type { BlobStore } from './blob-store.js';
import { hashDirectory } from './content-hash.js';
import { CatalogUnavailableError } from './errors.js';
import type { CatalogEntry, CatalogEvent, TaskCatalog } from './task-catalog.js';

/** What the sync needs of this process's task registry (TaskRegistry fits). */
export interface LocalTasks {
  register(id: string, dir: string): Promise<{ kind: string }>;
  unregister(id: string): Promise<void>;
  has(id: string): boolean;
}

interface HeldTask {
  version: number;
  contentHash: string;
  dir: string;
  /** The base model whose registry holds it. */
  base: string;
}

/**
 * Keeps one replica's (or worker's) registry in step with the shared catalog.
 *
 * - Pub/sub applies changes as they happen.
 * - `ensure(id)` runs before every request of a task: one HGET compares the
 *   catalog's version with the one held here, so a missed message can never
 *   serve a stale or deleted PET. Concurrent checks of one id share one read.
 * - Files are fetched lazily: a replica copies a task's blob into its host
 *   cache (cacheDir/<id>@<hash>) on the task's first request.
 * - Redis down: the check fails open. The replica keeps serving the tasks it
 *   holds and logs the outage once; registration and deletion are refused
 *   (CATALOG_UNAVAILABLE) by the catalog itself.
 * Tasks this process registered from anywhere else (its own tasks dir, the
 * demo) are never touched: only tasks taken from the catalog are "held".
 * A process that serves two base models (an encoder and a decoder) syncs the
 * tasks of both: each entry goes to the registry of the base it names.
 */
export class CatalogSync {
  private readonly held = new Map<string, HeldTask>();
  /** Registry per base model id; the first is opts.baseModel's. */
  private readonly locals = new Map<string, LocalTasks>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly cacheDir: string;
  private unsubscribe: (() => Promise<void>) | null = null;
  private catalogDown = false;

  constructor(
    private readonly catalog: TaskCatalog,
    private readonly blobs: BlobStore,
    local: LocalTasks,
    private readonly opts: { cacheDir: string; baseModel: string; logger: Logger },
  ) {
    this.cacheDir = resolve(opts.cacheDir);
    this.locals.set(opts.baseModel, local);
  }

  /** Also sync the catalog's tasks for `baseModel` (a decoder served beside the encoder) into `local`. */
  addBase(baseModel: string, local: LocalTasks): void {
    if (this.locals.has(baseModel)) throw new Error(`catalog sync: base model '${baseModel}' is already synced`);
    this.locals.set(baseModel, local);
  }

  private holdsLocally(id: string): boolean {
    return [...this.locals.values()].some((l) => l.has(id));
  }

  /** Subscribe to catalog events; a replica that cannot subscribe still syncs on every request. */
  async start(): Promise<void> {
    await mkdir(this.cacheDir, { recursive: true });
    try {
      this.unsubscribe = await this.catalog.subscribe((e) => this.onEvent(e));
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, 'catalog events unavailable; tasks sync on each request');
    }
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    this.unsubscribe = null;
    await Promise.allSettled([...this.inFlight.values()]);
  }

  /** Bring task `id` up to date with the catalog before serving it. Never throws for Redis being down. */
  ensure(id: string): Promise<void> {
    let p = this.inFlight.get(id);
    if (!p) {
      p = this.reconcile(id).finally(() => this.inFlight.delete(id));
      this.inFlight.set(id, p);
    }
    return p;
  }

  /** The version this process holds of `id`, or null when it did not take `id` from the catalog. */
  heldVersion(id: string): number | null {
    return this.held.get(id)?.version ?? null;
  }

  /**
   * Publish a task this process has just registered from `dir` (validated by
   * the local registry): store its files, then add it to the catalog. If the
   * catalog refuses (id taken elsewhere, Redis down), the caller undoes the
   * local registration; a blob written for a refused create is removed unless
   * another writer stored the same content.
   */
  async publish(id: string, dir: string, kind: string, opts: { mode?: 'create' | 'replace'; baseModel?: string } = {}): Promise<CatalogEntry> {
    const mode = opts.mode ?? 'create';
    const baseModel = opts.baseModel ?? this.opts.baseModel;
    if (!this.locals.has(baseModel)) throw new Error(`catalog sync: base model '${baseModel}' is not served here`);
    const { hash, bytes } = await hashDirectory(dir);
    const location = await this.blobs.put(id, hash, dir);
    const input = { id, kind, baseModel, sizeBytes: bytes, contentHash: hash, location };
    const previous = mode === 'replace' ? await this.catalog.get(id) : null;
    let entry: CatalogEntry;
    try {
      entry = mode === 'create' ? await this.catalog.create(input) : await this.catalog.replace(input);
    } catch (err) {
      // Keep the blob only if the catalog's entry for this id is exactly this content.
      const current = await this.catalog.get(id).catch(() => null);
      if (current?.location !== location) await this.blobs.remove(location);
      throw err;
    }
    if (previous && previous.location !== location) await this.blobs.remove(previous.location);
    this.held.set(id, { version: entry.version, contentHash: hash, dir: resolve(dir), base: baseModel });
    return entry;
  }

  /** Remove a task from the catalog (every replica drops it) and delete its blob. */
  async withdraw(id: string): Promise<CatalogEntry> {
    const removed = await this.catalog.remove(id);
    await this.blobs.remove(removed.location);
    return removed;
  }

  private onEvent(e: CatalogEvent): void {
    // Wait for a check already running (it may have read the old entry), then check again.
    // Nobody awaits this chain: a failure is logged here, never left as an unhandled rejection
    // (which would end the process); the next request of the task checks again.
    const running = this.inFlight.get(e.id) ?? Promise.resolve();
    running
      .catch(() => undefined)
      .then(() => this.ensure(e.id))
      .catch((err: unknown) => this.opts.logger.warn({ task: e.id, err: (err as Error).message }, 'catalog event could not be applied'));
  }

  private async reconcile(id: string): Promise<void> {
    let entry: CatalogEntry | null;
    try {
      entry = await this.catalog.get(id);
      if (this.catalogDown) this.opts.logger.info('shared task catalog reachable again');
      this.catalogDown = false;
    } catch (err) {
      if (!(err instanceof CatalogUnavailableError)) throw err;
      if (!this.catalogDown) this.opts.logger.warn('shared task catalog unavailable: serving the tasks this replica holds');
      this.catalogDown = true;
      return;
    }
    const held = this.held.get(id);
    if (!entry) {
      if (held) await this.drop(id, held, 'deleted from the catalog');
      return;
    }
    if (held && held.contentHash === entry.contentHash && held.base === entry.baseModel) {
      held.version = entry.version;
      return;
    }
    // A task of this process's own (tasks dir, demo) shadows a catalog entry of the same id.
    if (!held && this.holdsLocally(id)) return;
    const local = this.locals.get(entry.baseModel);
    if (!local) {
      if (held) await this.drop(id, held, 'moved to a base model not served here');
      this.opts.logger.warn({ task: id, baseModel: entry.baseModel }, 'catalog task is for another base model; not served here');
      return;
    }
    let dir: string;
    try {
      dir = await this.fetchBlob(entry);
    } catch (err) {
      // e.g. the blob was replaced while we copied it: keep what we hold; the next request checks again.
      this.opts.logger.warn({ task: id, err: (err as Error).message }, 'catalog blob could not be fetched');
      return;
    }
    if (held) await this.drop(id, held, 'replaced by a new version');
    try {
      await local.register(id, dir);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      if (err instanceof PetServeError) {
        this.opts.logger.error({ task: id, err: err.message }, 'catalog task could not be registered here');
        return;
      }
      throw err;
    }
    this.held.set(id, { version: entry.version, contentHash: entry.contentHash, dir, base: entry.baseModel });
    this.opts.logger.info({ task: id, version: entry.version, baseModel: entry.baseModel }, 'task taken from the shared catalog');
  }

  private async fetchBlob(entry: CatalogEntry): Promise<string> {
    const dir = join(this.cacheDir, `${entry.id}@${entry.contentHash}`);
    if (await pathExists(dir)) return dir;
    const staging = `${dir}.fetching-${process.pid}-${Date.now()}`;
    try {
      await this.blobs.fetch(entry.location, staging);
      await rename(staging, dir);
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    return dir;
  }

  private async drop(id: string, held: HeldTask, why: string): Promise<void> {
    this.held.delete(id);
    const local = this.locals.get(held.base);
    if (local?.has(id)) await local.unregister(id).catch(() => undefined);
    // Only files this sync fetched live under cacheDir; a publisher's own upload dir is its admin's to remove.
    if (held.dir.startsWith(this.cacheDir)) await rm(held.dir, { recursive: true, force: true });
    this.opts.logger.info({ task: id }, `task ${why}: no longer served here`);
  }
}
