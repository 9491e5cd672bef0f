import type { PetKind } from '../pet/types.js';
import type { CostModelState } from './cost-model.js';
import { PetServeError } from '../util/errors.js';

/**
 * The contract between whoever has requests (HTTP routes, queue workers,
 * benchmarks) and the scheduler that batches them onto the engine. Callers
 * submit one sequence at a time and await its answer; batching is invisible.
 */

/** One sequence to run for one task (null = the base model). */
export interface InferenceRequest {
  task: string | null;
  inputIds: readonly number[];
  tokenTypeIds?: readonly number[] | undefined;
  /** Latency objective for this request; default: the task's SLO from config, else scheduler.defaultSloMs. */
  sloMs?: number | undefined;
  /**
   * 'online' requests go before 'offline' ones (queue workers): offline work only
   * fills capacity that online requests leave idle.
   */
  priority?: 'online' | 'offline' | undefined;
  /** Return the [hidden] pooled output (embedding tasks need it). */
  pooled?: boolean | undefined;
  /** Reject instead of running once the deadline has passed (server: HTTP 504). Default true. */
  dropExpired?: boolean | undefined;
}

export interface InferenceResult {
  /** [numLabels] of the task's head (base classifier for base rows); null for embedding tasks. */
  logits: Float32Array | null;
  /** [hidden], when requested. */
  pooled: Float32Array | null;
  /** Time from submit until its batch started on the device. */
  queueWaitMs: number;
  /** Time from submit until the answer. */
  latencyMs: number;
  /** Requests in the batch that carried this one. */
  batchRows: number;
}

/** What the scheduler does right now (status page, /v1/status, metrics). */
export interface SchedulerStats {
  policy: string;
  queued: number;
  queuedOnline: number;
  queuedOffline: number;
  inFlightBatches: number;
  maxQueue: number;
  batchesRun: number;
  requestsDone: number;
  /** The online cost model's calibration state; null for a fixed model. */
  costModel?: CostModelState | null;
  /**
   * Early refusal (policy slo): at the default SLO `sloMs`, the longest predicted latency still
   * admitted (prediction + learned margin ≤ SLO), and how many recent outcomes the margin was
   * learned from (0: too few yet, the margin is a fixed fraction of each prediction).
   */
  admission?: { sloMs: number; admitsUpToMs: number; learnedFrom: number } | null;
}

/** Implemented by the scheduler; the server and workers only see this. */
export interface InferenceService {
  /**
   * Queue one request and resolve with its answer. Rejects with OverloadError when
   * the queue is full, DeadlineExceededError when it expired before running,
   * UnknownTaskError when the task is gone. Token ids are not checked here: the
   * gateway (src/gateway) checked them, once, before submitting.
   */
  submit(req: InferenceRequest): Promise<InferenceResult>;
  stats(): SchedulerStats;
  /** Stop accepting, let queued and in-flight requests finish (or reject them after timeoutMs). */
  drain(timeoutMs: number): Promise<void>;
}

/** One batch the scheduler ran (metrics, status page, benchmarks). */
export interface BatchReport {
  rows: number;
  tokens: number;
  distinctTasks: number;
  maxBatchTokens: number;
  /** Wall time of the runner call (host + device). */
  wallMs: number;
  /**
   * Device time when profiled (every Nth batch, timestamp queries): shared ops vs
   * PET ops by op class — 'lora', 'adapter', 'sparse' (diff and MaskBERT share one
   * sparse kernel), 'task_heads'. BitFit/IA3 live in shared-op epilogues, so their
   * cost is inside `shared`.
   */
  deviceMs: { total: number; shared: number; pet: Record<string, number> } | null;
  /** The cost model's estimate for this batch (ms), for calibration. */
  estimatedMs: number;
  /** Why this batch was cut (traces): the policy's mode, the batch-time cap in force, the queue around it. */
  decision?: BatchDecision;
}

export interface BatchDecision {
  /** 'throughput' (DP batch), 'deadline' (earliest-due fill), or the baseline policy's name. */
  mode: string;
  /** Batch-time cap by the cost model (ms); null = none. */
  capMs: number | null;
  /** Requests queued when the batch was cut (before taking it). */
  queuedBefore: number;
  /** Longest queue wait among the batch's rows when it started (ms). */
  maxQueueWaitMs: number;
  /** Least slack (deadline − predicted finish) among the rows at start (ms). */
  minSlackAtStartMs: number;
}

/** One finished (or refused) request. */
export interface RequestReport {
  kind: PetKind | 'base';
  /** 'overload': refused at submit, queue full or deadline unreachable (429). */
  outcome: 'ok' | 'error' | 'overload' | 'expired';
  queueWaitMs: number;
  latencyMs: number;
  /** deadline − finish time (negative = SLO missed). */
  slackMs: number;
  priority: 'online' | 'offline';
  /** Admission's predicted latency (ms), where admission judged the request (policy slo, online). */
  predictedMs?: number;
  /** For a refusal: the margin (ms) admission added to the prediction (AdmissionCalibration). */
  admissionMarginMs?: number;
}

/** Hooks for metrics; every method optional and must not throw. */
export interface SchedulerObserver {
  batchDone?(report: BatchReport): void;
  requestDone?(report: RequestReport): void;
}

/** The queue is full: try again later (HTTP 429 with Retry-After). */
export class OverloadError extends PetServeError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
    code: 'OVERLOADED' | 'DEADLINE_UNREACHABLE' = 'OVERLOADED',
  ) {
    super(code, message);
  }
}

/**
 * Refused at submit: by the cost model, the work queued ahead plus the request's
 * own cost ends past its deadline by more than the margin, so it would only wait
 * to fail with 504 (HTTP 429 with Retry-After: when the queue ahead has drained).
 */
export class DeadlineUnreachableError extends OverloadError {
  constructor(predictedMs: number, sloMs: number, retryAfterSeconds: number) {
    super(
      `the request cannot finish within its ${Math.round(sloMs)} ms deadline: the work queued ahead of it would take it to about ${Math.round(predictedMs)} ms; retry later`,
      retryAfterSeconds,
      'DEADLINE_UNREACHABLE',
    );
  }
}

/** The request's deadline passed before it could run (HTTP 504). */
export class DeadlineExceededError extends PetServeError {
  constructor(message: string) {
    super('DEADLINE_EXCEEDED', message);
  }
}

/** The service is shutting down and accepts no new requests (HTTP 503). */
export class ShuttingDownError extends PetServeError {
  constructor() {
    super('SHUTTING_DOWN', 'the server is shutting down and accepts no new requests');
  }
}
