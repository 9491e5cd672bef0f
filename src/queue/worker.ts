import { hostname } from 'node:os';
import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { OverloadError } from '../scheduler/types.js';
import { PetServeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { answerItem, type ItemEngine } from './answer.js';
import { ChunkRetryError, describeError } from './errors.js';
import { createRedis } from './redis.js';
import { answerLine, cancelChunkItems, errorLine, itemErrorLine } from './result-lines.js';
import { CHUNK_QUEUE_NAME, type BatchQueueSettings } from './settings.js';
import { BatchStore, type ResultWrite } from './store.js';
import type { ChunkJobData, ItemError, StoredItem } from './types.js';

export interface BatchWorkerOptions {
  settings: BatchQueueSettings;
  engine: ItemEngine;
  /** Chunks run at once (batches.workerConcurrency); their items share the engine's batches. */
  concurrency: number;
  logger: Logger;
  /**
   * A running chunk's lock; renewed every half of it while the process lives.
   * A killed worker's chunk is taken over once the lock lapses and a stalled
   * check runs: after at most lockDurationMs + stalledIntervalMs.
   */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  /** How long one item may wait out engine overload (429) before its chunk is retried later. */
  overloadWaitMs?: number;
  /** Shown in BullMQ's job records. */
  name?: string;
}

/**
 * 30 s is BullMQ's default lock: long enough that a busy event loop (GPU
 * readbacks, tokenizing a chunk) never loses it, short enough that a killed
 * worker's chunk is resumed within a minute.
 */
const DEFAULT_LOCK_MS = 30_000;
/** Checked twice as often as BullMQ's default so a crash costs ~45 s, not ~60 s. */
const DEFAULT_STALLED_INTERVAL_MS = 15_000;
/**
 * Stalls tolerated before a chunk is failed. Re-running a chunk is cheap
 * (answered items are skipped), and a rolling restart may stall a chunk more
 * than once, so BullMQ's default of 1 is too strict here.
 */
const MAX_STALLED_COUNT = 3;
const DEFAULT_OVERLOAD_WAIT_MS = 120_000;
const RUN_RETRY_DELAY_MS = 2000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether `p` fulfils within `ms` (the timer is cleared either way, so it never holds the process open). */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p.then(() => true, () => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Faults that say nothing about the item: retry the chunk later (another
 * worker may take it). Every other PetServeError is the item's own fault
 * (unknown task, bad ids, text too long, ...) and becomes its error line.
 * Errors that are not PetServeErrors (a driver or programming fault) are
 * retried too, and only become error lines on the last attempt.
 */
const TRANSIENT_CODES = new Set([
  'OVERLOADED',
  'SHUTTING_DOWN',
  'DEVICE_LOST',
  'GPU_UNAVAILABLE',
  'DEADLINE_EXCEEDED',
  'REDIS_UNAVAILABLE',
  // This worker runs no decoder; one that does may take the chunk.
  'GENERATION_UNAVAILABLE',
]);

export function isTransient(err: unknown): boolean {
  return !(err instanceof PetServeError) || TRANSIENT_CODES.has(err.code);
}

function itemError(err: unknown): ItemError {
  if (err instanceof PetServeError) return { code: err.code, message: err.message };
  return { code: 'INTERNAL', message: describeError(err) };
}

export interface ChunkOutcome {
  /** Items answered (or failed) by this run. */
  written: number;
  /** Items already answered by an earlier run of the chunk. */
  skipped: number;
  /** What happened to the chunk as a whole. */
  state: 'ran' | 'cancelled' | 'batch-gone' | 'items-expired';
}

export interface WorkerStats {
  chunksRun: number;
  itemsWritten: number;
  itemsSkipped: number;
}

/**
 * Result lines of one chunk run, written as items finish: answers that resolve
 * in the same tick (one engine batch) go to Redis in one script call, so a
 * chunk's progress is visible while it runs and survives the worker.
 */
class ChunkWriter {
  private pending: ResultWrite[] = [];
  private chain: Promise<void> = Promise.resolve();
  private scheduled = false;
  private failure: unknown = null;
  written = 0;

  constructor(
    private readonly store: BatchStore,
    private readonly batchId: string,
  ) {}

  add(w: ResultWrite): void {
    this.pending.push(w);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const writes = this.pending.splice(0);
      this.chain = this.chain
        .then(async () => {
          const n = await this.store.writeResults(this.batchId, writes);
          if (n > 0) this.written += n;
        })
        .catch((err: unknown) => {
          this.failure ??= err;
        });
    });
  }

  /** Wait for every line added so far to be written; rethrows the first write failure. */
  async settle(): Promise<void> {
    while (this.scheduled) await new Promise((resolve) => setImmediate(resolve));
    await this.chain;
    if (this.failure !== null) throw this.failure;
  }
}

/**
 * A queue worker: takes chunk jobs from BullMQ and answers their items through
 * the engine (InferenceService, priority 'offline'). Everything it produces is
 * written to Redis at once; a chunk that runs again — retry after a transient
 * fault, or taken over from a killed worker — skips the items already answered.
 */
export class BatchWorker {
  private readonly stats_: WorkerStats = { chunksRun: 0, itemsWritten: 0, itemsSkipped: 0 };
  private closing: Promise<void> | null = null;
  /** Reached Redis at least once (set by waitUntilReady, which start() calls). */
  private ready = false;

  private constructor(
    private readonly opts: BatchWorkerOptions,
    private readonly client: Redis,
    private readonly store: BatchStore,
    readonly worker: Worker<ChunkJobData, ChunkOutcome>,
  ) {}

  static start(opts: BatchWorkerOptions): BatchWorker {
    const { settings, logger } = opts;
    const name = opts.name ?? `${hostname()}:${process.pid}`;
    const client = createRedis(settings.redisUrl, 'worker', { name: `${settings.prefix}:petserve-worker`, logger });
    const store = new BatchStore(client, settings.prefix, settings.resultsTtlSeconds);
    let self: BatchWorker | null = null;
    const worker = new Worker<ChunkJobData, ChunkOutcome>(CHUNK_QUEUE_NAME, (job) => self!.runChunk(job), {
      // BullMQ duplicates this client (same options, so the same reconnect behaviour) for its own
      // connections; the client itself carries our keys' reads and writes.
      connection: client,
      prefix: settings.prefix,
      name,
      concurrency: opts.concurrency,
      lockDuration: opts.lockDurationMs ?? DEFAULT_LOCK_MS,
      stalledInterval: opts.stalledIntervalMs ?? DEFAULT_STALLED_INTERVAL_MS,
      maxStalledCount: MAX_STALLED_COUNT,
      // After a failed Redis command (connection dropped) BullMQ waits this long before
      // fetching or completing jobs again: 15 s by default, which stalls every chunk of
      // the worker for 15 s after a blip. Our clients reconnect within 2 s, so retry then.
      runRetryDelay: RUN_RETRY_DELAY_MS,
    });
    self = new BatchWorker(opts, client, store, worker);
    // BullMQ reports every failed reconnect; log a fault once, not every 2 s.
    let lastError = '';
    worker.on('error', (err) => {
      const text = describeError(err);
      if (text !== lastError) logger.warn({ err: text }, 'batch worker: queue error');
      lastError = text;
    });
    worker.on('ready', () => (lastError = ''));
    void self.waitUntilReady().catch(() => undefined);
    worker.on('failed', (job, err) => {
      if (job) void self!.onFailed(job, err);
    });
    worker.on('stalled', (jobId) => logger.warn({ job: jobId }, 'batch worker: took over a stalled chunk'));
    return self;
  }

  stats(): WorkerStats {
    return { ...this.stats_ };
  }

  /** Resolves once connected to Redis and waiting for chunks. */
  async waitUntilReady(): Promise<void> {
    await this.worker.waitUntilReady();
    this.ready = true;
  }

  /**
   * Stop taking chunks, let running ones finish (their results are written),
   * disconnect. Bounded by `timeoutMs`: with Redis gone, running chunks cannot
   * write and BullMQ cannot release them, so the worker then stops anyway —
   * their locks lapse and another worker resumes them, skipping what was
   * written. A worker that never reached Redis has nothing to finish.
   */
  close(timeoutMs = 30_000): Promise<void> {
    this.closing ??= (async () => {
      const closed = this.ready && (await settlesWithin(this.worker.close(), timeoutMs));
      if (!closed) {
        if (this.ready) this.opts.logger.warn({ timeoutMs }, 'batch worker: running chunks did not finish in time; another worker will resume them');
        await settlesWithin(this.worker.close(true), 2000);
      }
      this.client.disconnect();
    })();
    return this.closing;
  }

  private isFinalAttempt(job: Job<ChunkJobData>): boolean {
    return job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
  }

  private async runChunk(job: Job<ChunkJobData, ChunkOutcome>): Promise<ChunkOutcome> {
    const { batchId, chunk } = job.data;
    const log = this.opts.logger.child({ batch: batchId, chunk, attempt: job.attemptsMade + 1 });
    const status = await this.store.startChunk(batchId);
    if (status === null) {
      log.info('batch no longer exists (expired or removed); chunk dropped');
      return { written: 0, skipped: 0, state: 'batch-gone' };
    }
    const items = await this.store.chunkItems(batchId, chunk);
    if (items === null) {
      await this.failChunk(batchId, chunk, { code: 'ITEMS_EXPIRED', message: 'the items of this chunk expired from Redis before it ran' });
      return { written: 0, skipped: 0, state: 'items-expired' };
    }
    if (status === 'cancelled') {
      await cancelChunkItems(this.store, batchId, chunk, items);
      return { written: 0, skipped: 0, state: 'cancelled' };
    }
    const settled = await this.store.settled(
      batchId,
      items.map((it) => it.i),
    );
    const todo = items.filter((_, k) => !settled[k]);
    const skipped = items.length - todo.length;

    const writer = new ChunkWriter(this.store, batchId);
    const transient: { item: StoredItem; err: unknown }[] = [];
    await Promise.all(
      todo.map(async (item) => {
        try {
          const response = await this.answerWaitingOutOverload(batchId, item);
          writer.add({ index: item.i, kind: 'done', line: answerLine(batchId, item, response) });
        } catch (err) {
          if (isTransient(err)) transient.push({ item, err });
          else writer.add({ index: item.i, kind: 'failed', line: itemErrorLine(batchId, item, itemError(err)) });
        }
      }),
    );
    await writer.settle();
    let written = writer.written;
    if (transient.length > 0) {
      const first = transient[0]!.err;
      if (!this.isFinalAttempt(job)) throw new ChunkRetryError(batchId, chunk, transient.length, first);
      // Out of attempts: the items give up with the fault they met; the batch ends 'failed'.
      log.error({ items: transient.length, err: describeError(first) }, 'chunk gave up after its last attempt');
      const n = await this.store.writeResults(
        batchId,
        transient.map(({ item, err }) => ({ index: item.i, kind: 'failed' as const, line: itemErrorLine(batchId, item, itemError(err)) })),
        chunk,
      );
      written += Math.max(0, n);
    }
    this.stats_.chunksRun += 1;
    this.stats_.itemsWritten += written;
    this.stats_.itemsSkipped += skipped;
    log.debug({ written, skipped }, 'chunk done');
    return { written, skipped, state: 'ran' };
  }

  /**
   * Offline work yields to online traffic: on overload wait as told
   * (Retry-After; the generation scheduler says none, so a second) instead of
   * failing the chunk.
   */
  private async answerWaitingOutOverload(batchId: string, item: StoredItem): Promise<unknown> {
    const deadline = Date.now() + (this.opts.overloadWaitMs ?? DEFAULT_OVERLOAD_WAIT_MS);
    for (;;) {
      try {
        return await answerItem(this.opts.engine, item, batchId);
      } catch (err) {
        const overloaded = err instanceof OverloadError || (err instanceof PetServeError && err.code === 'OVERLOADED');
        if (!overloaded || Date.now() >= deadline) throw err;
        await sleep(err instanceof OverloadError ? Math.max(100, err.retryAfterSeconds * 1000) : 1000);
      }
    }
  }

  /**
   * A chunk that BullMQ failed for good — it threw on its last attempt (Redis
   * gone mid-write) or stalled more than MAX_STALLED_COUNT times — still owes
   * its batch a line per item, or the batch would never finish.
   */
  private async onFailed(job: Job<ChunkJobData>, err: Error): Promise<void> {
    try {
      if (!(await job.isFailed())) return; // it will be retried
      await this.failChunk(job.data.batchId, job.data.chunk, { code: 'CHUNK_FAILED', message: `the chunk failed after all attempts: ${err.message}` });
    } catch (e) {
      this.opts.logger.error({ batch: job.data.batchId, chunk: job.data.chunk, err: describeError(e) }, 'could not record a failed chunk');
    }
  }

  private async failChunk(batchId: string, chunk: number, error: ItemError): Promise<void> {
    const items = await this.store.chunkItems(batchId, chunk);
    let writes: ResultWrite[];
    if (items !== null) {
      writes = items.map((it) => ({ index: it.i, kind: 'failed', line: itemErrorLine(batchId, it, error) }));
    } else {
      // Items gone: fail the chunk's index range (custom ids are lost with the items).
      const meta = await this.store.meta(batchId);
      if (!meta) return;
      const from = chunk * meta.chunkSize;
      const to = Math.min(meta.view.counts.total, from + meta.chunkSize);
      writes = [];
      for (let i = from; i < to; i++) writes.push({ index: i, kind: 'failed', line: errorLine(i, undefined, undefined, error) });
    }
    await this.store.writeResults(batchId, writes, chunk);
  }
}
