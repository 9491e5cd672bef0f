import type { PetServeConfig } from '../config/config.js';
import type { PhaseTiming } from '../gpu/batch-encoder.js';
import { validateSequence } from '../engine/batch-input.js';
import type { ModelRunner, TaskRow, TaskRowResult } from '../engine/model-runner.js';
import { UnknownTaskError } from '../pet/registry.js';
import type { PetKind } from '../pet/types.js';
import { InvalidInputError, PetServeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { batchFeatures, greedyFill, partitionByLength, pickFifo, pickSlo, type BatchLimits, type QueuedItem } from './batch-policy.js';
import { type CostEstimator } from './cost-model.js';
import { deviceTimeSplit } from './device-time.js';
import { scheduleOperators } from './operator-scheduler.js';
import {
  DeadlineExceededError,
  OverloadError,
  ShuttingDownError,
  type InferenceRequest,
  type InferenceResult,
  type InferenceService,
  type SchedulerObserver,
  type SchedulerStats,
} from './types.js';

export type SchedulerConfig = PetServeConfig['scheduler'];

export interface SchedulerOptions {
  logger: Logger;
  /**
   * Prices batches for the 'slo' and 'pets' policies. Servers and workers get it
   * from createScheduler() (create-scheduler.ts), which loads the cached profile
   * or profiles the device; tests and benchmarks may pass their own.
   */
  cost: CostEstimator;
  observer?: SchedulerObserver | undefined;
  /** Clock (ms); tests inject one. */
  now?: () => number;
}

interface Entry extends QueuedItem {
  req: InferenceRequest;
  submittedMs: number;
  deadlineMs: number;
  dropExpired: boolean;
  resolve: (r: InferenceResult) => void;
  reject: (e: unknown) => void;
}

/** Safety margin on deadlines: cost-model error plus host jitter, as a fraction of the estimate. */
const MARGIN_FRACTION = 0.25;
/**
 * A batch may take at most this fraction of the tightest recent SLO: a request
 * arriving just after a batch started then waits one batch and runs in the next,
 * within its SLO. How long "recent" lasts: */
const BATCH_SLO_FRACTION = 0.4;
const TIGHT_SLO_MEMORY_MS = 10_000;

/**
 * The coordinated batch scheduler: one queue for every task and priority; when
 * the engine is free it cuts the next batch by the configured policy and runs it.
 * Nothing waits on a timer: an idle scheduler runs a lone request at once, and
 * requests that arrive while a batch runs are batched together when it ends.
 * One batch is in flight at a time (the engine serialises batches anyway); the
 * next one is chosen at the moment the device frees, with the freshest queue.
 */
export class Scheduler implements InferenceService {
  private readonly queue: Entry[] = [];
  private seq = 0;
  private running = false;
  private draining = false;
  private batchesRun = 0;
  private requestsDone = 0;
  /** PetS runs a queue snapshot's whole partition before looking at new arrivals. */
  private petsPlan: Entry[][] = [];
  /** Tokens per ms actually achieved (EWMA), for Retry-After. */
  private tokensPerMs = 0;
  private idleWaiters: (() => void)[] = [];
  /** Tightest online SLO seen recently: batches are capped to a fraction of it. */
  private tightSlo = { ms: Infinity, atMs: -Infinity };
  private readonly now: () => number;
  private readonly limits: BatchLimits;

  constructor(
    private readonly runner: Pick<ModelRunner, 'runTasks' | 'checkpoint' | 'registry'>,
    private readonly config: SchedulerConfig,
    private readonly opts: SchedulerOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.limits = { maxRows: config.maxBatchRows, maxTokens: config.maxBatchTokens };
  }

  submit(req: InferenceRequest): Promise<InferenceResult> {
    if (this.draining) return Promise.reject(new ShuttingDownError());
    let kind: PetKind | 'base';
    let petScale: number;
    try {
      ({ kind, petScale } = this.validate(req));
    } catch (err) {
      return Promise.reject(err);
    }
    const priority = req.priority ?? 'online';
    if (this.queue.length >= this.config.maxQueue) {
      const err = new OverloadError(
        `the request queue is full (${this.config.maxQueue} waiting); retry later`,
        this.retryAfterSeconds(),
      );
      this.opts.observer?.requestDone?.({ kind, outcome: 'overload', queueWaitMs: 0, latencyMs: 0, slackMs: 0, priority });
      return Promise.reject(err);
    }
    const now = this.now();
    const sloMs = req.sloMs ?? (req.task !== null ? this.config.taskSloMs[req.task] : undefined) ?? this.config.defaultSloMs;
    if (priority === 'online' && (sloMs <= this.tightSlo.ms || now - this.tightSlo.atMs > TIGHT_SLO_MEMORY_MS)) {
      this.tightSlo = { ms: sloMs, atMs: now };
    }
    return new Promise<InferenceResult>((resolve, reject) => {
      this.queue.push({
        seq: this.seq++,
        task: req.task,
        kind,
        length: req.inputIds.length,
        petScale,
        arrivalMs: now,
        deadlineMs: now + sloMs,
        dueMs: now + Math.min(sloMs, this.config.maxWaitMs),
        offline: priority === 'offline',
        req,
        submittedMs: now,
        dropExpired: req.dropExpired ?? true,
        resolve,
        reject,
      });
      this.kick();
    });
  }

  stats(): SchedulerStats {
    const offline = this.queue.filter((e) => e.offline).length;
    return {
      policy: this.config.policy,
      queued: this.queue.length,
      queuedOnline: this.queue.length - offline,
      queuedOffline: offline,
      inFlightBatches: this.running ? 1 : 0,
      maxQueue: this.config.maxQueue,
      batchesRun: this.batchesRun,
      requestsDone: this.requestsDone,
    };
  }

  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    if (!this.running && this.queue.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const outcome = await Promise.race([idle, timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      for (const e of this.queue.splice(0)) e.reject(new ShuttingDownError());
      this.petsPlan = [];
    }
  }

  /** Reject anything still queued (after drain, or on a hard stop). */
  close(): Promise<void> {
    this.draining = true;
    for (const e of this.queue.splice(0)) e.reject(new ShuttingDownError());
    this.petsPlan = [];
    return Promise.resolve();
  }

  /** Bad requests fail at submit, alone, before they can poison a batch. */
  /** Returns the request's PET kind and its size relative to the profiled PET of that kind (cost model). */
  private validate(req: InferenceRequest): { kind: PetKind | 'base'; petScale: number } {
    let kind: PetKind | 'base' = 'base';
    let petScale = 1;
    if (req.task !== null) {
      const info = this.runner.registry?.get(req.task);
      if (!info) throw new UnknownTaskError(req.task);
      kind = info.kind;
      petScale = this.opts.cost.sizeScale?.(kind, info.packedFloats) ?? 1;
    }
    validateSequence(req.inputIds, req.tokenTypeIds, this.runner.checkpoint.config);
    if (req.sloMs !== undefined && !(req.sloMs > 0)) throw new InvalidInputError('deadline_ms: must be a positive number');
    return { kind, petScale };
  }

  private retryAfterSeconds(): number {
    const queuedTokens = this.queue.reduce((s, e) => s + e.length, 0);
    if (this.tokensPerMs <= 0) return 1;
    return Math.max(1, Math.ceil(queuedTokens / this.tokensPerMs / 1000));
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    // setImmediate, not a timer: requests submitted in the same tick share the first batch.
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        this.expire();
        const batch = this.nextBatch();
        if (batch.length === 0) break;
        await this.runBatch(batch);
      }
    } finally {
      this.running = false;
      if (this.queue.length > 0) this.kick();
      else for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Requests whose deadline already passed are answered 'expired' instead of taking device time. */
  private expire(): void {
    const now = this.now();
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const e = this.queue[i]!;
      if (e.dropExpired && e.deadlineMs <= now) {
        this.queue.splice(i, 1);
        this.finish(e, 'expired', now, now);
        e.reject(new DeadlineExceededError(`deadline of ${Math.round(e.deadlineMs - e.submittedMs)} ms passed while queued`));
      }
    }
  }

  private nextBatch(): Entry[] {
    if (this.queue.length === 0) return [];
    let chosen: QueuedItem[];
    switch (this.config.policy) {
      case 'fifo':
        chosen = pickFifo(this.queue, this.limits);
        break;
      case 'pets': {
        this.petsPlan = this.petsPlan.map((b) => b.filter((e) => this.queue.includes(e))).filter((b) => b.length > 0);
        if (this.petsPlan.length === 0) this.petsPlan = partitionByLength(this.queue, this.opts.cost, this.limits) as Entry[][];
        chosen = this.petsPlan.shift()!;
        break;
      }
      case 'slo': {
        const now = this.now();
        const limits = { ...this.limits, maxMs: BATCH_SLO_FRACTION * this.tightSlo.ms };
        const typical = this.opts.cost.estimateMs(batchFeatures(greedyFill(this.queue, limits, [], this.opts.cost)));
        chosen = pickSlo(this.queue, {
          nowMs: now,
          cost: this.opts.cost,
          limits,
          window: 4 * this.limits.maxRows,
          marginMs: typical * MARGIN_FRACTION,
        }).batch;
        break;
      }
    }
    const taken = new Set(chosen);
    for (let i = this.queue.length - 1; i >= 0; i--) if (taken.has(this.queue[i]!)) this.queue.splice(i, 1);
    return chosen as Entry[];
  }

  private async runBatch(batch: Entry[]): Promise<void> {
    // A task removed since submit fails alone; the rest of the batch runs.
    const registry = this.runner.registry;
    const live: Entry[] = [];
    for (const e of batch) {
      if (e.task !== null && !registry?.has(e.task)) this.fail(e, new UnknownTaskError(e.task));
      else live.push(e);
    }
    if (live.length === 0) return;
    const started = this.now();
    const profile = this.config.profileEveryBatches > 0 && this.batchesRun % this.config.profileEveryBatches === 0 ? 'dispatches' : false;
    this.batchesRun += 1;
    let rows: TaskRowResult[];
    let phases: PhaseTiming[] | null = null;
    try {
      const r = await this.runner.runTasks(
        live.map((e): TaskRow => ({ task: e.task, inputIds: e.req.inputIds, tokenTypeIds: e.req.tokenTypeIds })),
        { logits: true, pooled: live.some((e) => e.req.pooled === true) },
        { profile, operators: this.config.operatorScheduler ? scheduleOperators : undefined },
      );
      rows = r.rows;
      phases = r.phases;
    } catch (err) {
      const tasks = new Set(live.map((e) => e.task));
      if (tasks.size > 1 && err instanceof PetServeError && err.code === 'POOL_EXHAUSTED') {
        // The batch's distinct PETs do not fit the GPU pool at once: run it as two
        // batches of half the tasks each (recursively), never failing the requests.
        const half = new Set([...tasks].slice(0, Math.ceil(tasks.size / 2)));
        this.batchesRun -= 1;
        await this.runBatch(live.filter((e) => half.has(e.task)));
        await this.runBatch(live.filter((e) => !half.has(e.task)));
        return;
      }
      if (live.length > 1 && isRequestFault(err)) {
        // One bad row (e.g. a task removed mid-flight) must not fail its batch-mates: run them one by one.
        for (const e of live) await this.runBatch([e]);
        return;
      }
      for (const e of live) this.fail(e, err);
      return;
    }
    const done = this.now();
    const f = batchFeatures(live);
    const wallMs = done - started;
    if (wallMs > 0) this.tokensPerMs = this.tokensPerMs === 0 ? f.tokens / wallMs : 0.8 * this.tokensPerMs + 0.2 * (f.tokens / wallMs);
    this.opts.observer?.batchDone?.({
      rows: live.length,
      tokens: f.tokens,
      distinctTasks: f.distinctTasks,
      maxBatchTokens: this.config.maxBatchTokens,
      wallMs,
      deviceMs: phases ? deviceTimeSplit(phases) : null,
      estimatedMs: this.opts.cost.estimateMs(f),
    });
    live.forEach((e, i) => {
      const row = rows[i]!;
      this.finish(e, 'ok', started, done);
      e.resolve({
        logits: row.logits,
        pooled: e.req.pooled ? row.pooled : null,
        queueWaitMs: started - e.submittedMs,
        latencyMs: done - e.submittedMs,
        batchRows: live.length,
      });
    });
  }

  private fail(e: Entry, err: unknown): void {
    const now = this.now();
    this.finish(e, 'error', now, now);
    e.reject(err);
  }

  private finish(e: Entry, outcome: 'ok' | 'error' | 'expired', startedMs: number, doneMs: number): void {
    this.requestsDone += 1;
    this.opts.observer?.requestDone?.({
      kind: e.kind as PetKind | 'base',
      outcome,
      queueWaitMs: startedMs - e.submittedMs,
      latencyMs: doneMs - e.submittedMs,
      slackMs: e.deadlineMs - doneMs,
      priority: e.offline ? 'offline' : 'online',
    });
  }
}

/** Errors caused by one request's content rather than by the device or the engine. */
function isRequestFault(err: unknown): boolean {
  return err instanceof PetServeError && (err.code === 'TASK_NOT_FOUND' || err.code === 'INVALID_INPUT');
}
