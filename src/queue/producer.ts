import { createHash, randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { PetServeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { BatchFinishedError, BatchNotFoundError, BatchTooLargeError, IdempotencyConflictError, RedisUnavailableError, describeError } from './errors.js';
import { createRedis, isConnected, redactRedisUrl, waitForRedis } from './redis.js';
import { cancelChunkItems, errorLine } from './result-lines.js';
import { chunkJobId, CHUNK_QUEUE_NAME, type BatchQueueSettings } from './settings.js';
import { BatchStore, type BatchMeta, type ResultWrite } from './store.js';
import type { BatchView, ChunkJobData, ParsedItem, StoredItem } from './types.js';

/** What /v2/health/ready and the status page report about the batch queue. */
export interface BatchQueueHealth {
  /** Redis answers: batch routes work. */
  ready: boolean;
  /** ioredis connection status ('ready', 'connecting', 'reconnecting', 'end', ...). */
  redis: string;
  /** REDIS_URL without its password. */
  url: string;
}

export interface SubmitResult {
  batch: BatchView;
  /** False when an idempotency key matched an earlier batch (nothing new was queued). */
  created: boolean;
}

/** Result lines read per Redis round trip while streaming. */
const RESULT_PAGE = 500;
/** Jobs added per addBulk call. */
const JOBS_PER_ADD = 500;
/** Concurrent job removals while cancelling. */
const CANCEL_CONCURRENCY = 16;
/**
 * How long a read waits for a dropped connection to come back before it
 * answers 503. ioredis reconnects within ~100-400 ms after Redis drops a
 * client; a read (status, list, results) is safe to retry, so it rides out
 * that blip instead of failing. Writes (submit, cancel) still fail fast: the
 * client decides whether to retry them (with an Idempotency-Key).
 */
const READ_RECONNECT_WAIT_MS = 2000;

/**
 * Whose batches a call may see: the owner id of the caller's API key, or
 * undefined when the server runs without keys (all batches are shared).
 * A batch owned by another key is answered as not found, never as forbidden.
 */
export type BatchOwner = string | undefined;

/**
 * The producer side of offline batches, used by the HTTP routes: stores a
 * batch's items in Redis, queues one BullMQ job per chunk, reads status and
 * results, cancels. Never holds results itself. When Redis is down every call
 * fails fast with RedisUnavailableError (HTTP 503) and nothing else of the
 * server is affected.
 */
export class BatchService {
  private closed = false;

  private constructor(
    readonly settings: BatchQueueSettings,
    private readonly client: Redis,
    private readonly queue: Queue<ChunkJobData>,
    private readonly store: BatchStore,
    private readonly logger: Logger,
  ) {}

  /** Connects in the background: returns at once even when Redis is unreachable (see ready()). */
  static open(settings: BatchQueueSettings, logger: Logger): BatchService {
    const client = createRedis(settings.redisUrl, 'api', { name: `${settings.prefix}:petserve-api`, logger });
    const queue = new Queue<ChunkJobData>(CHUNK_QUEUE_NAME, {
      connection: client,
      prefix: settings.prefix,
      defaultJobOptions: {
        attempts: settings.attempts,
        backoff: { type: 'exponential', delay: settings.retryBackoffMs },
        removeOnComplete: true,
        // Kept for inspection as long as the batch's own records.
        removeOnFail: { age: settings.resultsTtlSeconds },
      },
    });
    // A Queue re-emits connection errors; the client's listener already logs them.
    queue.on('error', () => undefined);
    return new BatchService(settings, client, queue, new BatchStore(client, settings.prefix, settings.resultsTtlSeconds), logger);
  }

  ready(): boolean {
    return !this.closed && isConnected(this.client);
  }

  health(): BatchQueueHealth {
    return { ready: this.ready(), redis: this.closed ? 'closed' : this.client.status, url: redactRedisUrl(this.settings.redisUrl) };
  }

  /** Wait until Redis answers (tests, CLI); rejects with RedisUnavailableError after `timeoutMs`. */
  async waitReady(timeoutMs: number): Promise<void> {
    try {
      await waitForRedis(this.client, timeoutMs);
      await this.queue.waitUntilReady();
    } catch (err) {
      throw new RedisUnavailableError(redactRedisUrl(this.settings.redisUrl), describeError(err), { cause: err });
    }
  }

  /** Run a Redis operation; connection failures become RedisUnavailableError. */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.ready()) throw new RedisUnavailableError(redactRedisUrl(this.settings.redisUrl), `connection ${this.health().redis}`);
    try {
      return await fn();
    } catch (err) {
      throw this.connectionError(err);
    }
  }

  /**
   * A read: like guard, but a dropped connection is waited for (up to
   * READ_RECONNECT_WAIT_MS) and the read tried once more. Without this, a read
   * that lands between Redis closing the socket and ioredis noticing (status
   * still 'ready', "Stream isn't writeable") fails though Redis is fine.
   */
  private async read<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return this.guard(fn);
    try {
      if (!this.ready()) await waitForRedis(this.client, READ_RECONNECT_WAIT_MS);
      return await fn();
    } catch (err) {
      const failure = this.connectionError(err);
      if (!(failure instanceof RedisUnavailableError) || this.closed) throw failure;
      try {
        await waitForRedis(this.client, READ_RECONNECT_WAIT_MS);
      } catch {
        throw failure;
      }
      return this.guard(fn);
    }
  }

  /** Our own errors and Redis' answers to a command (ReplyError) pass; anything else is a connectivity failure. */
  private connectionError(err: unknown): Error {
    if (err instanceof PetServeError || (err instanceof Error && err.name === 'ReplyError')) return err;
    return new RedisUnavailableError(redactRedisUrl(this.settings.redisUrl), describeError(err), { cause: err });
  }

  async submit(items: readonly ParsedItem[], idempotencyKey?: string, owner?: BatchOwner): Promise<SubmitResult> {
    const { chunkSize, maxItems } = this.settings;
    if (items.length > maxItems) throw new BatchTooLargeError(items.length, maxItems);
    const chunks = new Map<number, StoredItem[]>();
    const rejected: ResultWrite[] = [];
    const digest = createHash('sha256');
    for (const [k, p] of items.entries()) {
      // A million items take a while here: let online requests through meanwhile.
      if (k > 0 && k % 5000 === 0) await new Promise((resolve) => setImmediate(resolve));
      digest.update(JSON.stringify(p)).update('\n');
      if (p.ok) {
        const n = Math.floor(p.item.i / chunkSize);
        let list = chunks.get(n);
        if (!list) chunks.set(n, (list = []));
        list.push(p.item);
      } else {
        rejected.push({ index: p.rejected.i, kind: 'failed', line: errorLine(p.rejected.i, p.rejected.c, undefined, p.rejected.error) });
      }
    }
    const itemsDigest = digest.digest('hex');
    return this.guard(async () => {
      if (idempotencyKey !== undefined) {
        // Fast path: a replay does not store a second copy of the items.
        const existing = await this.store.client.get(this.store.idempotencyKey(idempotencyKey, owner));
        if (existing !== null) {
          const replay = await this.replay(existing, itemsDigest);
          if (replay) return replay;
        }
      }
      const id = `batch_${randomBytes(12).toString('hex')}`;
      try {
        await this.store.create({ id, total: items.length, chunkSize, chunks, digest: itemsDigest, idempotencyKey, createdAt: new Date().toISOString(), owner });
        if (idempotencyKey !== undefined) {
          const boundTo = await this.store.claimIdempotencyKey(idempotencyKey, id, owner);
          if (boundTo !== id) {
            const replay = await this.replay(boundTo, itemsDigest).catch(async (err: unknown) => {
              await this.store.delete(id, chunks.keys(), owner);
              throw err;
            });
            if (replay) {
              // A concurrent submit with the same key won; ours never becomes visible.
              await this.store.delete(id, chunks.keys(), owner);
              return replay;
            }
            // The key outlived its batch (expired records): it is ours now.
            await this.store.takeIdempotencyKey(idempotencyKey, id, owner);
          }
        }
        if (rejected.length > 0) await this.store.writeResults(id, rejected);
        const jobs = [...chunks.keys()].map((n) => ({ name: 'chunk', data: { batchId: id, chunk: n }, opts: { jobId: chunkJobId(id, n) } }));
        for (let at = 0; at < jobs.length; at += JOBS_PER_ADD) await this.queue.addBulk(jobs.slice(at, at + JOBS_PER_ADD));
      } catch (err) {
        // Without all its jobs the batch would never finish: remove it (jobs already added find no batch and end).
        await this.store.delete(id, chunks.keys(), owner).catch(() => undefined);
        if (idempotencyKey !== undefined) await this.store.releaseIdempotencyKey(idempotencyKey, id, owner).catch(() => undefined);
        throw err;
      }
      this.logger.info({ batch: id, items: items.length, rejected: rejected.length, chunks: chunks.size }, 'batch queued');
      return { batch: await this.view(id, owner), created: true };
    });
  }

  /** The earlier batch of an idempotency key, if its items were the same; null when it expired meanwhile. */
  private async replay(id: string, itemsDigest: string): Promise<SubmitResult | null> {
    const meta = await this.store.meta(id);
    if (!meta) return null;
    if (meta.digest !== itemsDigest) throw new IdempotencyConflictError(id);
    return { batch: meta.view, created: false };
  }

  /** A batch's record as `owner` may see it: another key's batch does not exist for it. */
  private async visibleMeta(id: string, owner: BatchOwner): Promise<BatchMeta> {
    const meta = await this.store.meta(id);
    if (!meta || (owner !== undefined && meta.owner !== owner)) throw new BatchNotFoundError(id);
    return meta;
  }

  private async view(id: string, owner: BatchOwner): Promise<BatchView> {
    return (await this.visibleMeta(id, owner)).view;
  }

  get(id: string, owner?: BatchOwner): Promise<BatchView> {
    return this.read(() => this.view(id, owner));
  }

  /** Newest first: `owner`'s batches, or every batch without keys. */
  list(offset: number, limit: number, owner?: BatchOwner): Promise<{ total: number; batches: BatchView[] }> {
    return this.read(() => this.store.list(offset, limit, owner));
  }

  /**
   * Cancel what has not run: chunks still waiting are removed from the queue
   * and their items answered with CANCELLED lines; a chunk already running
   * finishes; a chunk a worker picks up later sees the status and cancels
   * itself. Cancelling a cancelled batch answers its status again.
   */
  cancel(id: string, owner?: BatchOwner): Promise<BatchView> {
    return this.guard(async () => {
      await this.visibleMeta(id, owner);
      const before = await this.store.cancel(id);
      if (before === null) throw new BatchNotFoundError(id);
      if (before === 'completed' || before === 'failed') throw new BatchFinishedError(id, before);
      const meta = await this.store.meta(id);
      if (!meta) throw new BatchNotFoundError(id);
      let next = 0;
      const removeNext = async (): Promise<void> => {
        while (next < meta.view.chunks) {
          const n = next++;
          if ((await this.queue.remove(chunkJobId(id, n))) === 1) await cancelChunkItems(this.store, id, n);
        }
      };
      await Promise.all(Array.from({ length: CANCEL_CONCURRENCY }, removeNext));
      this.logger.info({ batch: id }, 'batch cancelled');
      return this.view(id, owner);
    });
  }

  /**
   * Result lines of items [offset, offset+limit) (all items without a range)
   * that have settled, in item order, page by page. Checks the batch exists
   * before the first page so a route can still answer 404.
   */
  async results(id: string, offset = 0, limit?: number, owner?: BatchOwner): Promise<{ batch: BatchView; end: number; pages: AsyncIterable<string[]> }> {
    const batch = await this.get(id, owner);
    const end = Math.min(batch.counts.total, limit === undefined ? Number.POSITIVE_INFINITY : offset + limit);
    const pages = async function* (this: BatchService): AsyncGenerator<string[]> {
      for (let from = offset; from < end; from += RESULT_PAGE) {
        yield await this.read(() => this.store.resultLines(id, from, Math.min(end, from + RESULT_PAGE)));
      }
    }.call(this);
    return { batch, end, pages };
  }

  /** Chunk jobs by BullMQ state (waiting, active, delayed, failed, completed), for metrics and the status page. */
  jobCounts(): Promise<Record<string, number>> {
    return this.read(() => this.queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed'));
  }

  /** Worker processes connected to the queue (BullMQ names each one's blocking connection). */
  workers(): Promise<number> {
    return this.read(() => this.queue.getWorkersCount());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A Queue that never connected may wait for Redis forever on close; don't hold a shutdown for it.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.queue.close().catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
    this.client.disconnect();
  }
}
