import { basename, resolve } from 'node:path';
import type { BertCheckpoint } from '../model/checkpoint.js';
import { InvalidInputError, PetServeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { loadPetDirectory } from './formats/load.js';
import { packPet } from './pack.js';
import type { PackedPet } from './packed-pet.js';
import { petHostBytes, type PetBundle, type PetKind } from './types.js';

/** A task id that is not registered (or is being removed). */
export class UnknownTaskError extends PetServeError {
  constructor(readonly taskId: string) {
    super('TASK_NOT_FOUND', `task '${taskId}' is not registered`);
  }
}

/** A task id already in use (by a task, or by the base model itself). */
export class TaskExistsError extends PetServeError {
  constructor(
    readonly taskId: string,
    reason = 'is already registered',
  ) {
    super('TASK_EXISTS', `task '${taskId}' ${reason}`);
  }
}

/** The base model's id named where only a task fits (unregistering it): the base is served for as long as the process runs. */
export class BaseModelError extends PetServeError {
  constructor(readonly modelId: string) {
    super('BASE_MODEL', `'${modelId}' is the base model (model.id), not a task: it cannot be deleted`);
  }
}

export interface TaskInfo {
  id: string;
  kind: PetKind;
  format: 'peft' | 'bundle';
  source: string;
  /** 0 = embedding task (answers with the pooled output). */
  numLabels: number;
  id2label: string[];
  /** Bytes of the PET's tensors on the host (f32). */
  hostBytes: number;
  /** Packed size: float elements and u32 words it occupies in the GPU pool. */
  packedFloats: number;
  packedWords: number;
  registeredAt: string;
}

interface Entry {
  info: TaskInfo;
  /** Host copy; null when dropped from the host cache (reloaded from `dir`). */
  packed: PackedPet | null;
  dir: string | null;
  packedBytes: number;
  inFlight: number;
  removing: boolean;
  drained: (() => void) | null;
  lastUsed: number;
}

/** Lease on a task for one batch: its PET cannot be unregistered until released. */
export interface TaskLease {
  readonly taskId: string;
  packed(): Promise<PackedPet>;
  release(): void;
}

const TASK_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The one rule for task ids, encoder tasks and decoder adapters alike (422 INVALID_INPUT otherwise). */
export function checkTaskIdFormat(id: string): void {
  if (!TASK_ID.test(id)) {
    throw new InvalidInputError(`task id '${id.slice(0, 64)}' must match ${TASK_ID.source} (letters, digits, '.', '_', '-')`);
  }
}

/**
 * The one registry of tasks. A task becomes visible only after its PET loaded,
 * validated against the base model, and packed; a refused PET leaves nothing
 * behind. PETs registered from a directory keep a host copy in an LRU cache of
 * `hostCacheBytes` and are re-read from disk when dropped from it.
 * Unregistering hides the task at once and completes when its in-flight batches
 * have released it; `onRemoved` listeners (the GPU pool) then free its memory.
 */
export class TaskRegistry {
  private readonly tasks = new Map<string, Entry>();
  private readonly removedListeners: ((taskId: string) => void)[] = [];
  private readonly idTakenElsewhere: ((id: string) => boolean)[] = [];
  private clock = 0;
  private cachedBytes = 0;

  /**
   * The id the base model itself answers under (config model.id; default the
   * basename of its directory). Tasks and the base share one namespace of ids,
   * so no task may take it.
   */
  readonly baseModelId: string;

  constructor(
    readonly base: BertCheckpoint,
    private readonly opts: { hostCacheBytes?: number; logger?: Logger; baseModelId?: string | undefined } = {},
  ) {
    this.baseModelId = opts.baseModelId ?? basename(resolve(base.dir));
  }

  onRemoved(listener: (taskId: string) => void): void {
    this.removedListeners.push(listener);
  }

  /** Refuse an id a new task cannot take: a bad pattern (422), a registered task or the base model's id (409 TASK_EXISTS). */
  checkNewId(id: string): void {
    checkTaskIdFormat(id);
    if (id === this.baseModelId) throw new TaskExistsError(id, "is the base model's id (model.id): choose another task id");
    if (this.tasks.has(id)) throw new TaskExistsError(id);
    if (this.idTakenElsewhere.some((taken) => taken(id))) throw new TaskExistsError(id, 'is the id of another model or task on this server');
  }

  /**
   * Ids other models of this server answer under (a decoder served beside this
   * encoder: its base and its adapters). Every model on a server shares one
   * namespace of ids, as the OpenAI `model` field and /v1/tasks name them.
   */
  reserveIdsOf(taken: (id: string) => boolean): void {
    this.idTakenElsewhere.push(taken);
  }

  /** Load, validate and register the PET directory `dir` (PEFT or PetServe bundle) as task `id`. */
  async register(id: string, dir: string): Promise<TaskInfo> {
    this.checkNewId(id);
    const bundle = await loadPetDirectory(dir, this.base);
    // A concurrent registration of the same id may have won while we loaded.
    this.checkNewId(id);
    return this.insert(id, bundle, dir);
  }

  /** Register an already validated bundle (kept in memory). */
  registerBundle(id: string, bundle: PetBundle): TaskInfo {
    this.checkNewId(id);
    return this.insert(id, bundle, null);
  }

  private insert(id: string, bundle: PetBundle, dir: string | null): TaskInfo {
    const packed = packPet(bundle, this.base);
    const info: TaskInfo = {
      id,
      kind: bundle.pet.kind,
      format: bundle.format,
      source: bundle.source,
      numLabels: bundle.head?.bias.length ?? 0,
      id2label: bundle.head?.id2label ?? [],
      hostBytes: petHostBytes(bundle),
      packedFloats: packed.floats.length,
      packedWords: packed.words.length,
      registeredAt: new Date().toISOString(),
    };
    const packedBytes = packed.floats.byteLength + packed.words.byteLength;
    this.tasks.set(id, { info, packed, dir, packedBytes, inFlight: 0, removing: false, drained: null, lastUsed: ++this.clock });
    if (dir) {
      this.cachedBytes += packedBytes;
      this.trimHostCache(id);
    }
    this.opts.logger?.info({ task: id, kind: info.kind, format: info.format, hostBytes: info.hostBytes }, 'task registered');
    return info;
  }

  /** Hide `id` now; resolve once no batch holds it and its memory is freed. */
  async unregister(id: string): Promise<void> {
    const e = this.tasks.get(id);
    if (!e || e.removing) throw new UnknownTaskError(id);
    e.removing = true;
    if (e.inFlight > 0) await new Promise<void>((resolve) => (e.drained = resolve));
    this.tasks.delete(id);
    if (e.packed && e.dir) this.cachedBytes -= e.packedBytes;
    for (const l of this.removedListeners) l(id);
    this.opts.logger?.info({ task: id }, 'task unregistered');
  }

  get(id: string): TaskInfo | undefined {
    const e = this.tasks.get(id);
    return e && !e.removing ? e.info : undefined;
  }

  has(id: string): boolean {
    return this.get(id) !== undefined;
  }

  /** Whether `id` names something this encoder answers for: the base model or a registered task. */
  answersTo(id: string): boolean {
    return id === this.baseModelId || this.has(id);
  }

  list(): TaskInfo[] {
    return [...this.tasks.values()].filter((e) => !e.removing).map((e) => e.info);
  }

  get size(): number {
    return this.list().length;
  }

  memory(): { hostCachedBytes: number; hostTotalBytes: number } {
    let total = 0;
    for (const e of this.tasks.values()) total += e.info.hostBytes;
    return { hostCachedBytes: this.cachedBytes, hostTotalBytes: total };
  }

  /** Take a lease on `id` for one batch (throws UnknownTaskError). */
  acquire(id: string): TaskLease {
    const e = this.tasks.get(id);
    if (!e || e.removing) throw new UnknownTaskError(id);
    e.inFlight += 1;
    e.lastUsed = ++this.clock;
    let released = false;
    return {
      taskId: id,
      packed: () => this.loadPacked(id, e),
      release: () => {
        if (released) return;
        released = true;
        e.inFlight -= 1;
        if (e.inFlight === 0 && e.drained) e.drained();
      },
    };
  }

  private async loadPacked(id: string, e: Entry): Promise<PackedPet> {
    if (e.packed) return e.packed;
    // Dropped from the host cache: re-read, re-validate (the files may have changed), re-pack.
    const bundle = await loadPetDirectory(e.dir!, this.base);
    const packed = packPet(bundle, this.base);
    if (!e.packed) {
      e.packed = packed;
      e.packedBytes = packed.floats.byteLength + packed.words.byteLength;
      this.cachedBytes += e.packedBytes;
      this.trimHostCache(id);
    }
    return e.packed;
  }

  private trimHostCache(keep: string): void {
    const budget = this.opts.hostCacheBytes ?? Number.POSITIVE_INFINITY;
    while (this.cachedBytes > budget) {
      let victim: Entry | null = null;
      for (const [id, e] of this.tasks) {
        if (id !== keep && e.dir && e.packed && (!victim || e.lastUsed < victim.lastUsed)) victim = e;
      }
      if (!victim) return;
      victim.packed = null;
      this.cachedBytes -= victim.packedBytes;
    }
  }
}
