import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LuaScript } from './redis.js';
import type { BatchStatus, BatchView, StoredItem } from './types.js';

/**
 * Everything the batch queue keeps in Redis besides BullMQ's own keys
 * (`{prefix}:batches:*`). Per batch:
 *
 *   {prefix}:batch:{id}                hash: status, counters, timestamps
 *   {prefix}:batch:{id}:chunk:{n}      string: JSON array of chunk n's valid items
 *   {prefix}:batch:{id}:results        hash: item index → result line (JSON)
 *   {prefix}:batch-index               zset: batch ids by creation time (listing)
 *   {prefix}:batch-index:{owner}       zset: the same, of one API key's batches (server.apiKeys)
 *   {prefix}:batch-idem:{sha256(owner, key)}  string: batch id of an idempotency key
 *
 * Results are written with HSETNX and counted in the same script, so a chunk
 * that runs twice (retry, stalled job picked up by another worker, a write
 * replayed after a reconnect) never duplicates a line or double-counts.
 * All keys expire `ttl` seconds after the batch's last write.
 */

/** How a result counts: answered, answered with an error, never run (cancelled). */
export type SettleKind = 'done' | 'failed' | 'cancelled';

export interface ResultWrite {
  index: number;
  kind: SettleKind;
  line: string;
}

// KEYS: meta, results. ARGV: ttl, now (ISO), failed-chunk marker ('' = none), then (index, kind, line) triples.
// Returns the number of lines newly written, or -1 when the batch no longer exists.
const WRITE_RESULTS = new LuaScript(
  'write-results',
  `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local written = 0
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    written = written + 1
  end
end
if ARGV[3] ~= '' and redis.call('HSETNX', KEYS[1], ARGV[3], '1') == 1 then
  redis.call('HINCRBY', KEYS[1], 'chunksFailed', 1)
end
local ttl = tonumber(ARGV[1])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
local m = redis.call('HMGET', KEYS[1], 'total', 'done', 'failed', 'cancelled', 'status', 'chunksFailed', 'finishedAt')
local settled = tonumber(m[2] or '0') + tonumber(m[3] or '0') + tonumber(m[4] or '0')
if settled >= tonumber(m[1]) and not m[7] then
  if m[5] == 'queued' or m[5] == 'running' then
    if tonumber(m[6] or '0') > 0 then
      redis.call('HSET', KEYS[1], 'status', 'failed')
    else
      redis.call('HSET', KEYS[1], 'status', 'completed')
    end
  end
  redis.call('HSET', KEYS[1], 'finishedAt', ARGV[2])
end
return written
`,
);

// KEYS: meta. ARGV: now. A worker starts a chunk: queued → running. Returns the status (after), or nil when gone.
const START_CHUNK = new LuaScript(
  'start-chunk',
  `
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return nil end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'startedAt', ARGV[1])
  return 'running'
end
return s
`,
);

// KEYS: meta. ARGV: now. Returns the status before the call, or nil when gone.
const CANCEL = new LuaScript(
  'cancel',
  `
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return nil end
if s == 'queued' or s == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelledAt', ARGV[1])
end
return s
`,
);

const META_FIELDS = [
  'status',
  'total',
  'done',
  'failed',
  'cancelled',
  'chunks',
  'createdAt',
  'startedAt',
  'finishedAt',
  'cancelledAt',
  'idem',
  'digest',
  'chunkSize',
  'owner',
] as const;

export interface BatchMeta {
  view: BatchView;
  digest: string;
  chunkSize: number;
  /** Owner id of the API key that created it; null when created without keys. */
  owner: string | null;
}

export interface NewBatch {
  id: string;
  total: number;
  chunkSize: number;
  /** Valid items by chunk number (chunks with none are absent). */
  chunks: Map<number, StoredItem[]>;
  digest: string;
  idempotencyKey: string | undefined;
  createdAt: string;
  owner: string | undefined;
}

/** Chunks written per pipeline round trip when a batch is stored (bounds one request's size). */
const CHUNKS_PER_PIPELINE = 64;

export class BatchStore {
  constructor(
    readonly client: Redis,
    readonly prefix: string,
    readonly ttlSeconds: number,
  ) {}

  metaKey(id: string): string {
    return `${this.prefix}:batch:${id}`;
  }
  resultsKey(id: string): string {
    return `${this.prefix}:batch:${id}:results`;
  }
  chunkKey(id: string, chunk: number): string {
    return `${this.prefix}:batch:${id}:chunk:${chunk}`;
  }
  get indexKey(): string {
    return `${this.prefix}:batch-index`;
  }
  /** One owner's listing; without an owner, the index of every batch. */
  indexOf(owner: string | undefined): string {
    return owner === undefined ? this.indexKey : `${this.indexKey}:${owner}`;
  }
  idempotencyKey(key: string, owner: string | undefined): string {
    // Hashed: client keys may be long or hold any characters. Per owner: one key's client cannot replay another's batch.
    return `${this.prefix}:batch-idem:${createHash('sha256').update(owner ?? '').update('\n').update(key).digest('hex')}`;
  }

  /** Store a new batch's record and items (not yet visible to workers: no jobs exist). */
  async create(b: NewBatch): Promise<void> {
    const meta = this.metaKey(b.id);
    const created = await this.client
      .multi()
      .hset(meta, {
        id: b.id,
        status: 'queued',
        total: b.total,
        done: 0,
        failed: 0,
        cancelled: 0,
        chunks: Math.ceil(b.total / b.chunkSize),
        chunkSize: b.chunkSize,
        createdAt: b.createdAt,
        digest: b.digest,
        ...(b.idempotencyKey !== undefined ? { idem: b.idempotencyKey } : {}),
        ...(b.owner !== undefined ? { owner: b.owner } : {}),
      })
      .expire(meta, this.ttlSeconds)
      .zadd(this.indexKey, Date.parse(b.createdAt), b.id)
      .zadd(this.indexOf(b.owner), Date.parse(b.createdAt), b.id)
      .exec();
    throwPipelineError(created);
    const entries = [...b.chunks];
    for (let at = 0; at < entries.length; at += CHUNKS_PER_PIPELINE) {
      const p = this.client.pipeline();
      for (const [n, items] of entries.slice(at, at + CHUNKS_PER_PIPELINE)) p.set(this.chunkKey(b.id, n), JSON.stringify(items), 'EX', this.ttlSeconds);
      throwPipelineError(await p.exec());
    }
  }

  /** Remove a batch entirely (a submit that lost an idempotency race or could not queue its jobs). */
  async delete(id: string, chunks: Iterable<number>, owner: string | undefined): Promise<void> {
    const keys = [this.metaKey(id), this.resultsKey(id), ...[...chunks].map((n) => this.chunkKey(id, n))];
    await this.client.multi().del(...keys).zrem(this.indexKey, id).zrem(this.indexOf(owner), id).exec();
  }

  /** Bind an idempotency key to `id`; returns the id it is bound to (ours, or an earlier batch's). */
  async claimIdempotencyKey(key: string, id: string, owner: string | undefined): Promise<string> {
    const k = this.idempotencyKey(key, owner);
    const set = await this.client.set(k, id, 'EX', this.ttlSeconds, 'NX');
    if (set === 'OK') return id;
    const existing = await this.client.get(k);
    // Expired between the two calls: claim again.
    return existing ?? this.claimIdempotencyKey(key, id, owner);
  }

  /** Bind an idempotency key to `id` whatever it pointed to (its batch expired). */
  async takeIdempotencyKey(key: string, id: string, owner: string | undefined): Promise<void> {
    await this.client.set(this.idempotencyKey(key, owner), id, 'EX', this.ttlSeconds);
  }

  async releaseIdempotencyKey(key: string, id: string, owner: string | undefined): Promise<void> {
    const k = this.idempotencyKey(key, owner);
    if ((await this.client.get(k)) === id) await this.client.del(k);
  }

  async meta(id: string): Promise<BatchMeta | null> {
    const key = this.metaKey(id);
    const [values, pttl] = await Promise.all([this.client.hmget(key, ...META_FIELDS), this.client.pttl(key)]);
    const f = Object.fromEntries(META_FIELDS.map((name, i) => [name, values[i] ?? null])) as Record<(typeof META_FIELDS)[number], string | null>;
    if (f.status === null || f.total === null) return null;
    const total = Number(f.total);
    const done = Number(f.done ?? 0);
    const failed = Number(f.failed ?? 0);
    const cancelled = Number(f.cancelled ?? 0);
    return {
      digest: f.digest ?? '',
      chunkSize: Number(f.chunkSize ?? 1),
      owner: f.owner,
      view: {
        id,
        object: 'batch',
        status: f.status as BatchStatus,
        counts: { total, done, failed, cancelled, pending: Math.max(0, total - done - failed - cancelled) },
        chunks: Number(f.chunks ?? 0),
        created_at: f.createdAt ?? '',
        started_at: f.startedAt,
        finished_at: f.finishedAt,
        cancelled_at: f.cancelledAt,
        expires_at: pttl > 0 ? new Date(Date.now() + pttl).toISOString() : null,
        idempotency_key: f.idem,
      },
    };
  }

  /** Newest first (one owner's, or all); ids whose records expired are dropped from the index on the way. */
  async list(offset: number, limit: number, owner: string | undefined): Promise<{ total: number; batches: BatchView[] }> {
    const index = this.indexOf(owner);
    const ids = await this.client.zrevrange(index, offset, offset + limit - 1);
    const metas = await Promise.all(ids.map((id) => this.meta(id)));
    const gone = ids.filter((_, i) => metas[i] === null);
    if (gone.length > 0) await this.client.zrem(index, ...gone);
    const total = await this.client.zcard(index);
    return { total, batches: metas.filter((m): m is BatchMeta => m !== null).map((m) => m.view) };
  }

  /** A worker begins a chunk: returns the batch status (queued batches become running), or null when it is gone. */
  async startChunk(id: string): Promise<BatchStatus | null> {
    const s = await START_CHUNK.run(this.client, [this.metaKey(id)], [new Date().toISOString()]);
    return typeof s === 'string' ? (s as BatchStatus) : null;
  }

  /** Mark a batch cancelled; returns its status before, or null when it does not exist. */
  async cancel(id: string): Promise<BatchStatus | null> {
    const s = await CANCEL.run(this.client, [this.metaKey(id)], [new Date().toISOString()]);
    return typeof s === 'string' ? (s as BatchStatus) : null;
  }

  /** Chunk n's valid items, or null when the key expired. */
  async chunkItems(id: string, chunk: number): Promise<StoredItem[] | null> {
    const text = await this.client.get(this.chunkKey(id, chunk));
    return text === null ? null : (JSON.parse(text) as StoredItem[]);
  }

  /** Which of `indices` already have a result line. */
  async settled(id: string, indices: readonly number[]): Promise<boolean[]> {
    if (indices.length === 0) return [];
    const values = await this.client.hmget(this.resultsKey(id), ...indices.map(String));
    return values.map((v) => v !== null);
  }

  /**
   * Write result lines (each at most once) and update counters and the batch
   * status in one atomic script. `failedChunk` marks chunk n as given up
   * (counted once), which makes the batch end as 'failed'.
   * Returns the lines newly written, or -1 when the batch is gone.
   */
  async writeResults(id: string, writes: readonly ResultWrite[], failedChunk?: number): Promise<number> {
    const args: (string | number)[] = [this.ttlSeconds, new Date().toISOString(), failedChunk === undefined ? '' : `chunkFailed:${failedChunk}`];
    for (const w of writes) args.push(w.index, w.kind, w.line);
    return Number(await WRITE_RESULTS.run(this.client, [this.metaKey(id), this.resultsKey(id)], args));
  }

  /** Result lines of indices [from, to) that exist, in order. */
  async resultLines(id: string, from: number, to: number): Promise<string[]> {
    if (to <= from) return [];
    const fields: string[] = [];
    for (let i = from; i < to; i++) fields.push(String(i));
    const values = await this.client.hmget(this.resultsKey(id), ...fields);
    return values.filter((v): v is string => v !== null);
  }
}

function throwPipelineError(results: [Error | null, unknown][] | null): void {
  for (const [err] of results ?? []) if (err) throw err;
}
