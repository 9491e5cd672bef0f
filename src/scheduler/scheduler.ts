import type { PetServeConfig } from '../config/config.js';
import type { PhaseTiming } from '../gpu/batch-encoder.js';
import type { ModelRunner, TaskRow, TaskRowResult } from '../engine/model-runner.js';
import { PoolExhaustedError } from '../pet/gpu-pool.js';
import { UnknownTaskError } from '../pet/registry.js';
import type { PetKind } from '../pet/types.js';
import { InvalidInputError, PetServeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { batchFeatures, greedyFill, partitionByLength, pickFifo, pickSlo, type BatchLimits, type QueuedItem } from './batch-policy.js';
import { ADMISSION_CALIBRATION_DEFAULTS, AdmissionCalibration, type AdmissionCalibrationOptions, type AdmissionOutcome } from './admission-calibration.js';
import type { CostEstimator } from './cost-model.js';
import { deviceTimeSplit } from './device-time.js';
import { scheduleOperators } from './operator-scheduler.js';
import {
  DeadlineExceededError,
  DeadlineUnreachableError,
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
  /** Overrides of how admission learns its margin (tests and experiments; defaults in admission-calibration.ts). */
  admissionCalibration?: Partial<AdmissionCalibrationOptions>;
}

interface Entry extends QueuedItem {
  req: InferenceRequest;
  submittedMs: number;
  deadlineMs: number;
  /** Admission's predicted latency (ms), when admission judged it; its outcome calibrates the next ones. */
  predictedMs: number | null;
  dropExpired: boolean;
  resolve: (r: InferenceResult) => void;
  reject: (e: unknown) => void;
}

/**
 * Safety margin on deadlines, as a fraction of a typical batch's estimate: at
 * least this, more when the cost model's recent predictions were off by more
 * (a device shared with other work runs the same batch 0.5–3× as long), at most
 * one whole batch.
 */
const MARGIN_FRACTION = 0.25;
/**
 * Until the online cost model has converged, SLO decisions take every batch as
 * this much longer than estimated (smaller batches under the time cap, items
 * found at risk earlier), and no request is refused as unreachable: a guess
 * may make the scheduler cautious, never make it turn requests away.
 */
const UNCONVERGED_PESSIMISM = 1.5;
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
  /** The batch on the device: when it started and how long the cost model said it would take. */
  private inFlight: { startedMs: number; estimatedMs: number } | null = null;
  /** Tokens per ms actually achieved (EWMA), for Retry-After. */
  private tokensPerMs = 0;
  private idleWaiters: (() => void)[] = [];
  /**
   * Online arrivals: when the last came and the mean gap between them (EWMA), so an
   * admission can foresee the later requests that will share its batch.
   */
  private arrivals = { lastMs: -Infinity, gapMs: Infinity };
  /** Outcomes of recent admissions: how far their predictions ran over (admissionMarginMs). */
  private readonly calibration: AdmissionCalibration;
  /** Tightest online SLO seen recently: batches are capped to a fraction of it. */
  private tightSlo = { ms: Infinity, atMs: -Infinity };
  private readonly now: () => number;
  private readonly limits: BatchLimits;
  /** How the batch about to run was chosen (for BatchReport.decision). */
  private lastDecision: { mode: string; capMs: number | null; queuedBefore: number } = { mode: '', capMs: null, queuedBefore: 0 };

  constructor(
    private readonly runner: Pick<ModelRunner, 'runTasks' | 'registry'>,
    private readonly config: SchedulerConfig,
    private readonly opts: SchedulerOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.limits = { maxRows: config.maxBatchRows, maxTokens: config.maxBatchTokens };
    this.calibration = new AdmissionCalibration({ ...ADMISSION_CALIBRATION_DEFAULTS, ...opts.admissionCalibration });
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
    // The base model (task null) takes its override under its own id (model.id), as every route names it.
    const sloKey = req.task ?? this.runner.registry?.baseModelId;
    const sloMs = req.sloMs ?? (sloKey !== undefined ? this.config.taskSloMs[sloKey] : undefined) ?? this.config.defaultSloMs;
    if (priority === 'online' && (sloMs <= this.tightSlo.ms || now - this.tightSlo.atMs > TIGHT_SLO_MEMORY_MS)) {
      this.tightSlo = { ms: sloMs, atMs: now };
    }
    if (priority === 'online') this.noteArrival(now);
    const item: QueuedItem = {
      seq: this.seq++,
      task: req.task,
      kind,
      length: req.inputIds.length,
      petScale,
      arrivalMs: now,
      dueMs: now + Math.min(sloMs, this.config.maxWaitMs),
      offline: priority === 'offline',
    };
    const dropExpired = req.dropExpired ?? true;
    let predictedMs: number | null = null;
    if (this.config.policy === 'slo' && !item.offline && dropExpired && this.opts.cost.converged !== false) {
      // Refused when the prediction plus how far such predictions have lately run over
      // (AdmissionCalibration) ends past the deadline: a request admitted is one the
      // scheduler expects to finish, not a coin toss for a 504.
      predictedMs = this.predictFinish(item, now) - now;
      const marginMs = this.admissionMarginMs(predictedMs, sloMs);
      const refuse = predictedMs + marginMs > sloMs;
      this.calibration.noteDecision(refuse);
      if (refuse) {
        this.opts.observer?.requestDone?.({ kind, outcome: 'overload', queueWaitMs: 0, latencyMs: 0, slackMs: sloMs - predictedMs, priority, predictedMs, admissionMarginMs: marginMs });
        return Promise.reject(new DeadlineUnreachableError(predictedMs, sloMs, Math.max(1, Math.ceil((predictedMs + marginMs - sloMs) / 1000))));
      }
    }
    return new Promise<InferenceResult>((resolve, reject) => {
      this.queue.push({ ...item, req, deadlineMs: now + sloMs, submittedMs: now, predictedMs, dropExpired, resolve, reject });
      this.kick();
    });
  }

  /**
   * When `item` would finish if submitted now, by the cost model: the rest of the
   * running batch, then the online work due no later than it (the slo policy runs
   * earliest-due first) with `item` itself, cut into as many batches as the row,
   * token and time limits make, each paying the fixed per-batch cost, plus the rows
   * later arrivals bring to its own batch. No margin here: admissionMarginMs() adds
   * the one the recent outcomes of such predictions call for.
   */
  private predictFinish(item: QueuedItem, now: number): number {
    const cost = this.opts.cost;
    const busyMs = this.running && this.inFlight ? Math.max(0, this.inFlight.startedMs + this.inFlight.estimatedMs - now) : 0;
    const ahead: QueuedItem[] = this.queue.filter((e) => !e.offline && e.dueMs <= item.dueMs);
    ahead.push(item);
    const f = batchFeatures(ahead);
    const workMs = cost.estimateMs(f);
    const fixedMs = cost.estimateMs({ rows: 0, tokens: 0, sumSqLen: 0, kindTokens: {}, distinctTasks: 0 });
    const capMs = BATCH_SLO_FRACTION * this.tightSlo.ms;
    const limits = this.sloLimits();
    const batches = Math.max(
      Math.ceil(f.rows / limits.maxRows),
      Math.ceil(f.tokens / limits.maxTokens),
      Number.isFinite(capMs) && capMs > fixedMs ? Math.ceil((workMs - fixedMs) / (capMs - fixedMs)) : 1,
      1,
    );
    // The item's own batch is the last; until it starts, later arrivals keep joining it (they are due
    // later, so they never run before it, but they run WITH it): add the rows they are expected to bring,
    // within the room left under the row and time limits. Under overload that batch is always full;
    // without this term admission priced it by the rows queued now and admitted requests came back late.
    const queuedMs = workMs + (batches - 1) * fixedMs;
    const perRowMs = (workMs - fixedMs) / f.rows;
    // The queued rows spread evenly over the batches (the token or time limit may make more batches than
    // the row limit does, so "full batches, then the rest" could leave the last fewer than zero rows).
    const lastRows = f.rows / batches;
    const lastBatchMs = fixedMs + lastRows * perRowMs;
    const startsInMs = busyMs + queuedMs - lastBatchMs;
    const roomRows = Math.max(0, Math.min(limits.maxRows - lastRows, Number.isFinite(capMs) && perRowMs > 0 ? (capMs - lastBatchMs) / perRowMs : Infinity));
    // (Requests submitted in the same millisecond make the gap 0: then the room fills, never NaN.)
    const joiningRows = startsInMs > 0 ? Math.min(roomRows, startsInMs / Math.max(this.arrivals.gapMs, 1e-6)) : 0;
    const totalMs = queuedMs + joiningRows * perRowMs;
    return now + busyMs + totalMs;
  }

  /**
   * What admission adds to a prediction before comparing it with the SLO: learned from the
   * outcomes of recent admissions (AdmissionCalibration); until enough were seen, the batch
   * policy's margin fraction of the whole prediction (a prediction that spans several batches
   * is off by the sum of their errors, so a fraction of the whole, not of one batch).
   */
  private admissionMarginMs(predictedMs: number, sloMs: number): number {
    return this.calibration.marginMs(predictedMs, sloMs, this.now()) ?? this.marginFraction() * predictedMs;
  }

  /** EWMA of the gap between online arrivals over about the last 20 (a burst shows within a few). */
  private noteArrival(now: number): void {
    const gap = now - this.arrivals.lastMs;
    this.arrivals.lastMs = now;
    if (!Number.isFinite(gap)) return;
    this.arrivals.gapMs = Number.isFinite(this.arrivals.gapMs) ? 0.9 * this.arrivals.gapMs + 0.1 * gap : gap;
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
      costModel: this.opts.cost.state?.() ?? null,
      admission: this.config.policy === 'slo' ? this.admissionStats() : null,
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

  private admissionStats(): NonNullable<SchedulerStats['admission']> {
    const now = this.now();
    const sloMs = this.config.defaultSloMs;
    const learnedFrom = this.calibration.learnedFrom(now);
    return { sloMs, admitsUpToMs: this.calibration.admitsUpToMs(sloMs, now) ?? sloMs / (1 + this.marginFraction()), learnedFrom };
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
    if (req.sloMs !== undefined && !(req.sloMs > 0)) throw new InvalidInputError('deadline_ms: must be a positive number');
    return { kind, petScale };
  }

  /** The row and token limits the slo policy cuts within: the configured ones, and no larger than the cost model can price. */
  private sloLimits(): BatchLimits {
    const trusted = this.opts.cost.trustedBatchTokens?.() ?? Infinity;
    return { maxRows: this.limits.maxRows, maxTokens: Math.min(this.limits.maxTokens, trusted) };
  }

  private marginFraction(): number {
    return Math.min(1, Math.max(MARGIN_FRACTION, this.opts.cost.state?.().recentError ?? 0));
  }

  /** The cost model as SLO decisions see it: pessimistic until an online model has converged (UNCONVERGED_PESSIMISM). */
  private decisionCost(): CostEstimator {
    const cost = this.opts.cost;
    if (cost.converged !== false) return cost;
    return { estimateMs: (f) => UNCONVERGED_PESSIMISM * cost.estimateMs(f) };
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

  /**
   * Requests whose deadline already passed are answered 'expired' instead of
   * taking device time; under the slo policy with a converged cost model, so are
   * those that could no longer finish in time even run alone right now: serving
   * them late would only delay the requests that still can make it.
   */
  private expire(): void {
    const now = this.now();
    const judge = this.config.policy === 'slo' && this.opts.cost.converged !== false;
    const missed: AdmissionOutcome[] = [];
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const e = this.queue[i]!;
      if (!e.dropExpired) continue;
      const passed = e.deadlineMs <= now;
      if (passed || (judge && now + this.opts.cost.estimateMs(batchFeatures([e])) > e.deadlineMs)) {
        this.queue.splice(i, 1);
        this.finish(e, 'expired', now, now);
        // It would have ended past its deadline: the SLO (or the wait so far) is a lower bound on its latency.
        if (e.predictedMs !== null) missed.push({ predictedMs: e.predictedMs, measuredMs: Math.max(now - e.submittedMs, e.deadlineMs - e.submittedMs), sloMs: e.deadlineMs - e.submittedMs });
        const sloMs = Math.round(e.deadlineMs - e.submittedMs);
        e.reject(new DeadlineExceededError(passed ? `deadline of ${sloMs} ms passed while queued` : `deadline of ${sloMs} ms cannot be met any more: too little time is left to run it`));
      }
    }
    // Dropped together, so one outcome: what delayed them was one event.
    if (missed.length > 0) this.calibration.record(missed, now);
  }

  private nextBatch(): Entry[] {
    if (this.queue.length === 0) return [];
    let chosen: QueuedItem[];
    this.lastDecision = { mode: this.config.policy, capMs: null, queuedBefore: this.queue.length };
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
        const limits = { ...this.sloLimits(), maxMs: BATCH_SLO_FRACTION * this.tightSlo.ms };
        const cost = this.decisionCost();
        const typical = cost.estimateMs(batchFeatures(greedyFill(this.queue, limits, [], cost)));
        const pick = pickSlo(this.queue, {
          nowMs: now,
          cost,
          limits,
          window: 4 * this.limits.maxRows,
          marginMs: typical * this.marginFraction(),
        });
        chosen = pick.batch;
        this.lastDecision = { mode: pick.mode, capMs: limits.maxMs, queuedBefore: this.queue.length };
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
    // Predicted before the run: what the decision was based on (the online model learns from the measurement after).
    const f = batchFeatures(live);
    const estimatedMs = this.opts.cost.estimateMs(f);
    const started = this.now();
    this.inFlight = { startedMs: started, estimatedMs };
    const profile = this.config.profileEveryBatches > 0 && this.batchesRun % this.config.profileEveryBatches === 0 ? 'dispatches' : false;
    this.batchesRun += 1;
    let rows: TaskRowResult[];
    let phases: PhaseTiming[] | null = null;
    try {
      const r = await this.runner.runTasks(
        live.map((e): TaskRow => ({ task: e.task, inputIds: e.req.inputIds, tokenTypeIds: e.req.tokenTypeIds })),
        { logits: true, pooled: live.some((e) => e.req.pooled === true) },
        // Every request came through the gateway, which checked its ids against the model (the only check).
        { profile, operators: this.config.operatorScheduler ? scheduleOperators : undefined, rowsChecked: true },
      );
      rows = r.rows;
      phases = r.phases;
    } catch (err) {
      this.inFlight = null;
      const tasks = new Set(live.map((e) => e.task));
      if (tasks.size > 1 && err instanceof PoolExhaustedError) {
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
    const wallMs = done - started;
    this.inFlight = null;
    this.opts.cost.observe?.(f, wallMs);
    if (wallMs > 0) this.tokensPerMs = this.tokensPerMs === 0 ? f.tokens / wallMs : 0.8 * this.tokensPerMs + 0.2 * (f.tokens / wallMs);
    this.opts.observer?.batchDone?.({
      rows: live.length,
      tokens: f.tokens,
      distinctTasks: f.distinctTasks,
      maxBatchTokens: this.config.maxBatchTokens,
      wallMs,
      deviceMs: phases ? deviceTimeSplit(phases) : null,
      estimatedMs,
      decision: {
        ...this.lastDecision,
        maxQueueWaitMs: Math.max(...live.map((e) => started - e.submittedMs)),
        minSlackAtStartMs: Math.min(...live.map((e) => e.deadlineMs - started - estimatedMs)),
      },
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
    this.calibration.record(
      live.flatMap((e) => (e.predictedMs === null ? [] : [{ predictedMs: e.predictedMs, measuredMs: done - e.submittedMs, sloMs: e.deadlineMs - e.submittedMs }])),
      done,
    );
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
      ...(e.predictedMs !== null ? { predictedMs: e.predictedMs } : {}),
    });
  }
}

/** Errors caused by one request's content rather than by the device or the engine. */
function isRequestFault(err: unknown): boolean {
  return err instanceof PetServeError && (err.code === 'TASK_NOT_FOUND' || err.code === 'INVALID_INPUT');
}
