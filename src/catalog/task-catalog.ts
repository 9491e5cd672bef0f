import type { Redis } from 'ioredis';
import { TaskExistsError, UnknownTaskError } from '../pet/registry.js';
import { CatalogUnavailableError } from './errors.js';

/** One task as every replica and worker sees it. */
export interface CatalogEntry {
  id: string;
  kind: string;
  /** The base model this PET was validated against (config `model.id`). */
  baseModel: string;
  /** Bytes of the PET's files. */
  sizeBytes: number;
  /** sha256 of the PET directory (see hashDirectory). */
  contentHash: string;
  /** Where its files are in the blob store. */
  location: string;
  updatedAt: string;
  /**
   * Catalog-wide change counter at this entry's last write. Replicas compare it
   * with the version they hold; a changed version means "fetch again".
   */
  version: number;
}

export type CatalogEntryInput = Omit<CatalogEntry, 'version' | 'updatedAt'>;

export interface CatalogEvent {
  op: 'put' | 'delete';
  id: string;
  version: number;
}

/**
 * Entries live in one Redis hash (id -> "<version>:<json>"); a counter gives
 * each write a version; every write publishes an event. Writes are Lua scripts,
 * so "check, bump version, write, publish" is one atomic step: two replicas
 * registering the same id cannot both win.
 */
const PUT_SCRIPT = `
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1])
if ARGV[3] == 'create' and exists == 1 then return redis.error_reply('TASK_EXISTS') end
if ARGV[3] == 'replace' and exists == 0 then return redis.error_reply('TASK_NOT_FOUND') end
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], v .. ':' .. ARGV[2])
redis.call('PUBLISH', ARGV[4], cjson.encode({op = 'put', id = ARGV[1], version = v}))
return v
`;

const DELETE_SCRIPT = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return redis.error_reply('TASK_NOT_FOUND') end
redis.call('HDEL', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], cjson.encode({op = 'delete', id = ARGV[1], version = v}))
return old
`;

export class TaskCatalog {
  private readonly entriesKey: string;
  private readonly versionKey: string;
  readonly channel: string;

  constructor(
    private readonly redis: Redis,
    prefix = 'petserve',
  ) {
    this.entriesKey = `${prefix}:catalog:tasks`;
    this.versionKey = `${prefix}:catalog:version`;
    this.channel = `${prefix}:catalog:events`;
  }

  /** Add a task; TASK_EXISTS if the id is taken anywhere. */
  create(entry: CatalogEntryInput): Promise<CatalogEntry> {
    return this.write(entry, 'create');
  }

  /** Replace a task's content (a new version); TASK_NOT_FOUND if it is not in the catalog. */
  replace(entry: CatalogEntryInput): Promise<CatalogEntry> {
    return this.write(entry, 'replace');
  }

  /** Remove a task; returns what was removed (its blob is the caller's to delete). */
  async remove(id: string): Promise<CatalogEntry> {
    const raw = await this.call(() => this.redis.eval(DELETE_SCRIPT, 2, this.entriesKey, this.versionKey, id, this.channel), id);
    return parseEntry(id, String(raw));
  }

  async get(id: string): Promise<CatalogEntry | null> {
    const raw = await this.call(() => this.redis.hget(this.entriesKey, id), id);
    return raw === null ? null : parseEntry(id, raw);
  }

  async list(): Promise<CatalogEntry[]> {
    const all = await this.call(() => this.redis.hgetall(this.entriesKey), '');
    return Object.entries(all)
      .map(([id, raw]) => parseEntry(id, raw))
      .sort((a, b) => a.id.localeCompare(b.id));
  }

  /**
   * Listen for changes on a dedicated connection (a subscribed ioredis client
   * can run no other command). Returns a function that stops listening.
   */
  async subscribe(onEvent: (e: CatalogEvent) => void): Promise<() => Promise<void>> {
    const sub = this.redis.duplicate();
    sub.on('error', () => undefined); // the owner's connection reports state; a retry follows
    sub.on('message', (channel: string, message: string) => {
      if (channel !== this.channel) return;
      const e = parseEvent(message);
      if (e) onEvent(e);
    });
    await sub.subscribe(this.channel);
    return async () => {
      sub.disconnect();
    };
  }

  private async write(entry: CatalogEntryInput, mode: 'create' | 'replace'): Promise<CatalogEntry> {
    const stored = { ...entry, updatedAt: new Date().toISOString() };
    const version = await this.call(
      () => this.redis.eval(PUT_SCRIPT, 2, this.entriesKey, this.versionKey, entry.id, JSON.stringify(stored), mode, this.channel),
      entry.id,
    );
    return { ...stored, version: Number(version) };
  }

  /** Map Redis replies to typed errors: our script's refusals, or the catalog being unreachable. */
  private async call<T>(fn: () => Promise<T>, id: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (message.includes('TASK_EXISTS')) throw new TaskExistsError(id);
      if (message.includes('TASK_NOT_FOUND')) throw new UnknownTaskError(id);
      throw new CatalogUnavailableError('the shared task catalog (Redis) is unavailable; try again later', { cause: err });
    }
  }
}

function parseEntry(id: string, raw: string): CatalogEntry {
  const colon = raw.indexOf(':');
  const version = Number(raw.slice(0, colon));
  const body = JSON.parse(raw.slice(colon + 1)) as Omit<CatalogEntry, 'version'>;
  return { ...body, id, version };
}

function parseEvent(message: string): CatalogEvent | null {
  try {
    const e = JSON.parse(message) as Partial<CatalogEvent>;
    if ((e.op === 'put' || e.op === 'delete') && typeof e.id === 'string' && typeof e.version === 'number') {
      return { op: e.op, id: e.id, version: e.version };
    }
  } catch {
    // not ours
  }
  return null;
}
