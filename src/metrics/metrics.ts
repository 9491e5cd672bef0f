import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import type { MemoryReport, TaskMemory } from '../engine/model-runner.js';
import { PET_KINDS, type PetKind } from '../pet/types.js';
import type { BatchReport, RequestReport, SchedulerObserver, SchedulerStats } from '../scheduler/types.js';
import { PetOverheadWindow, type PetOverhead } from './pet-overhead.js';
import { readQueueStats, type QueueReading, type QueueStatsSource } from './queue-read.js';
import { RollingWindow, type RollingWindowOptions } from './rolling-window.js';
import { TaskRequestCounts } from './task-counts.js';

/**
 * Every Prometheus metric PetServe exports is defined in this module, on a
 * registry the caller owns (never prom-client's global one: tests and the
 * status page build many). Names follow Prometheus conventions: `petserve_`
 * prefix, base units in the name (`_seconds`, `_bytes`, `_ratio`), `_total` on
 * counters. No label takes a task id or a raw URL unless asked for
 * (`perTaskTopK`), so the number of series stays bounded however many tasks
 * and clients there are. docs/operating.md lists every metric with its meaning.
 */
export const METRIC_PREFIX = 'petserve_';

/** What the memory collectors read (a `ModelRunner` fits as it is). */
export interface MemorySource {
  memory(): MemoryReport;
  taskMemory(): TaskMemory[];
  /** The task registry, for the host-side PET cache (`ModelRunner.registry`). */
  readonly registry?: { memory(): { hostCachedBytes: number; hostTotalBytes: number } } | null;
}

export type { QueueStatsSource } from './queue-read.js';

/** What the scheduler collectors read (the scheduler's `InferenceService` fits). */
export interface SchedulerStatsSource {
  stats(): SchedulerStats;
}

export interface MetricsOptions {
  /** `metrics.perTaskTopK` from config: export a per-task request counter for the K busiest tasks (0 = none). */
  perTaskTopK?: number;
  /** Process and Node.js runtime metrics (CPU, memory, event-loop lag, GC). Default true. */
  defaultMetrics?: boolean;
  /** Profiled batches the PET overhead gauge averages over. */
  overheadWindowBatches?: number;
  /** History kept for the status page. */
  window?: RollingWindowOptions;
  /** How long a scrape waits for Redis before reporting the queue down. */
  queueTimeoutMs?: number;
}

/** The BullMQ job states exported; other states (e.g. 'paused', 'prioritized') are not exported as their own series. */
export const QUEUE_JOB_STATES = ['waiting', 'active', 'completed', 'failed', 'delayed'] as const;

type KindLabel = PetKind | 'base' | 'other';
const KIND_LABELS: ReadonlySet<string> = new Set<string>([...PET_KINDS, 'base']);

function kindLabel(kind: string): KindLabel {
  return KIND_LABELS.has(kind) ? (kind as KindLabel) : 'other';
}

/**
 * PET op classes of `BatchReport.deviceMs.pet`: the scheduler splits device time
 * by the kernel a dispatch ran (src/scheduler/device-time.ts: lora, adapter,
 * sparse = diff and mask, task_heads), PET kind names are accepted too. Anything
 * else is folded into 'other_pet' to keep the label bounded.
 */
const DEVICE_PARTS: ReadonlySet<string> = new Set<string>([...PET_KINDS, 'sparse', 'task_heads']);

function devicePartLabel(cls: string): string {
  return DEVICE_PARTS.has(cls) ? cls : 'other_pet';
}

// Buckets, seconds. Lavapipe answers in 50 ms–seconds, a GPU in ms: the range spans both.
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];
// Slack = deadline − finish: negative buckets resolve how badly a missed SLO was missed.
const SLACK_BUCKETS = [-10, -5, -2, -1, -0.5, -0.25, -0.1, 0, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30];
const ROW_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
const TOKEN_BUCKETS = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768];
const TASK_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const RATIO_BUCKETS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
const DEVICE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
// Actual / estimated batch time: 1 = the cost model is right.
const ESTIMATE_BUCKETS = [0.25, 0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2, 4];

const finite = (x: number): boolean => Number.isFinite(x);

/**
 * A counter that mirrors a monotonic total read from somewhere else (the GPU
 * pool's page-in count). The source restarts from 0 when its owner is rebuilt
 * (the pool after a device loss); the counter must not go down, so a smaller
 * reading is taken as a restart and counted from 0. (If the new pool has
 * already passed the old total by the next scrape, the page-ins between the
 * rebuild and that scrape are undercounted; losses are rare enough for that.)
 */
class TotalMirror {
  private last = 0;

  delta(current: number): number {
    const d = current >= this.last ? current - this.last : current;
    this.last = current;
    return d;
  }
}

export class PetServeMetrics {
  readonly registry: Registry;
  /** Recent traffic for the status page (throughput, p50/p99, batch size, SLO attainment). */
  readonly window: RollingWindow;
  /** Requests per task (status page; top K exported when `perTaskTopK` > 0). */
  readonly taskRequests: TaskRequestCounts;
  readonly petOverheadWindow: PetOverheadWindow;
  readonly perTaskTopK: number;
  private readonly queueTimeoutMs: number;

  readonly httpRequests: Counter<'method' | 'route' | 'status_code' | 'kind'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  readonly requests: Counter<'kind' | 'outcome' | 'priority'>;
  readonly requestLatency: Histogram<'kind' | 'priority'>;
  readonly queueWait: Histogram<'priority'>;
  readonly deadlineSlack: Histogram<'priority'>;
  readonly sloMisses: Counter<'kind' | 'priority'>;
  readonly batchRequests: Histogram;
  readonly batchTokens: Histogram;
  readonly batchTasks: Histogram;
  readonly batchTokenUtilization: Histogram;
  readonly batchDuration: Histogram;
  readonly batchCostEstimate: Histogram;
  readonly batchDeviceSeconds: Histogram<'part'>;
  readonly petOverheadRatio: Gauge;
  readonly deviceLostTotal: Counter;
  readonly queueItems: Counter<'outcome'>;

  private memorySource: MemorySource | null = null;
  private schedulerSource: SchedulerStatsSource | null = null;
  private queueSource: QueueStatsSource | null = null;

  /**
   * Hooks for the scheduler (`batchDone`, `requestDone`). They only touch
   * in-memory metric state and never throw, as the scheduler's contract asks.
   */
  readonly observer: SchedulerObserver = {
    batchDone: (report) => this.onBatch(report),
    requestDone: (report) => this.onRequest(report),
  };

  constructor(registry: Registry, opts: MetricsOptions = {}) {
    this.registry = registry;
    this.window = new RollingWindow(opts.window);
    this.taskRequests = new TaskRequestCounts();
    this.petOverheadWindow = new PetOverheadWindow(opts.overheadWindowBatches ?? 64);
    this.perTaskTopK = opts.perTaskTopK ?? 0;
    this.queueTimeoutMs = opts.queueTimeoutMs ?? 2000;
    const registers = [registry];
    const p = METRIC_PREFIX;

    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: registry, prefix: p });
      // prom-client exports these three as gauges named `_total`, which
      // Prometheus' linter (promtool check metrics) rejects: `_total` is for
      // counters. Their per-type siblings (`..._active_handles{type}` etc.)
      // stay, and sum() over them gives the same totals.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
        registry.removeSingleMetric(`${p}${name}`);
      }
    }

    this.httpRequests = new Counter({
      name: `${p}http_requests_total`,
      help: 'HTTP requests answered, by matched route pattern, method, status code and the PET kind of the task they targeted (none: no task).',
      labelNames: ['method', 'route', 'status_code', 'kind'],
      registers,
    });
    this.httpDuration = new Histogram({
      name: `${p}http_request_duration_seconds`,
      help: 'Time from receiving an HTTP request until its response was sent (end to end inside the server).',
      labelNames: ['method', 'route', 'status_code'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.requests = new Counter({
      name: `${p}requests_total`,
      help: 'Inference requests (one sequence each) finished or refused by the scheduler, by PET kind, outcome (ok, error, overload, expired) and priority.',
      labelNames: ['kind', 'outcome', 'priority'],
      registers,
    });
    this.requestLatency = new Histogram({
      name: `${p}request_latency_seconds`,
      help: 'Time from submit to answer of successful inference requests.',
      labelNames: ['kind', 'priority'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: `${p}request_queue_wait_seconds`,
      help: 'Time successful inference requests waited from submit until their batch started.',
      labelNames: ['priority'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.deadlineSlack = new Histogram({
      name: `${p}request_deadline_slack_seconds`,
      help: 'Deadline minus finish time of successful inference requests (negative: the SLO was missed).',
      labelNames: ['priority'],
      buckets: SLACK_BUCKETS,
      registers,
    });
    this.sloMisses = new Counter({
      name: `${p}slo_misses_total`,
      help: 'Inference requests that missed their deadline: answered late, or dropped as expired before running.',
      labelNames: ['kind', 'priority'],
      registers,
    });

    this.batchRequests = new Histogram({
      name: `${p}batch_requests`,
      help: 'Requests (sequences) per batch run on the device.',
      buckets: ROW_BUCKETS,
      registers,
    });
    this.batchTokens = new Histogram({
      name: `${p}batch_tokens`,
      help: 'Tokens (sum of sequence lengths) per batch.',
      buckets: TOKEN_BUCKETS,
      registers,
    });
    this.batchTasks = new Histogram({
      name: `${p}batch_tasks`,
      help: 'Distinct tasks per batch (the base model counts as one).',
      buckets: TASK_BUCKETS,
      registers,
    });
    this.batchTokenUtilization = new Histogram({
      name: `${p}batch_token_utilization_ratio`,
      help: 'Tokens per batch divided by the token budget (scheduler.maxBatchTokens).',
      buckets: RATIO_BUCKETS,
      registers,
    });
    this.batchDuration = new Histogram({
      name: `${p}batch_duration_seconds`,
      help: 'Wall time of one batch on the runner (host work and device work).',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.batchCostEstimate = new Histogram({
      name: `${p}batch_cost_estimate_ratio`,
      help: "Measured batch wall time divided by the scheduler's cost-model estimate (1 = exact).",
      buckets: ESTIMATE_BUCKETS,
      registers,
    });
    this.batchDeviceSeconds = new Histogram({
      name: `${p}batch_device_seconds`,
      help: 'Device time of one profiled batch, by part: shared (base-model ops, with element-wise PETs folded in) or a PET op class (lora, adapter, sparse = diff/mask, task_heads).',
      labelNames: ['part'],
      buckets: DEVICE_BUCKETS,
      registers,
    });
    const overheadGauge: Gauge = new Gauge({
      name: `${p}pet_overhead_ratio`,
      help: 'Device time of PET ops divided by device time of shared ops, over the last profiled batches (NaN until one was profiled).',
      registers,
      collect: () => overheadGauge.set(this.petOverhead()?.ratio ?? Number.NaN),
    });
    this.petOverheadRatio = overheadGauge;
    this.deviceLostTotal = new Counter({
      name: `${p}gpu_device_lost_total`,
      help: 'GPU device losses seen (each one rebuilds the device and re-uploads weights).',
      registers,
    });
    this.queueItems = new Counter({
      name: `${p}queue_items_total`,
      help: 'Items of offline batch jobs finished by this worker process, by outcome (processed, failed).',
      labelNames: ['outcome'],
      registers,
    });

    if (this.perTaskTopK > 0) {
      const k = this.perTaskTopK;
      const perTask: Counter<'task'> = new Counter({
        name: `${p}task_requests_total`,
        help: `HTTP requests per task, for the ${k} busiest tasks only (metrics.perTaskTopK) to bound series.`,
        labelNames: ['task'],
        registers,
        // Rebuilt from exact counts at each scrape: a task's series only grows
        // while it stays in the top K; one leaving it simply stops being exported.
        collect: () => {
          perTask.reset();
          for (const [task, n] of this.taskRequests.top(k)) perTask.inc({ task }, n);
        },
      });
    }
  }

  /** PET overhead over the last profiled batches (null before the first). */
  petOverhead(): PetOverhead | null {
    return this.petOverheadWindow.overhead();
  }

  /** Count one GPU device loss (the runtime calls this when the device is lost). */
  deviceLost(): void {
    this.deviceLostTotal.inc();
  }

  /** Count items of an offline batch job that a worker finished. */
  recordQueueItems(processed: number, failed: number): void {
    if (processed > 0) this.queueItems.inc({ outcome: 'processed' }, processed);
    if (failed > 0) this.queueItems.inc({ outcome: 'failed' }, failed);
  }

  /** Count one request for `task` (status page; per-task counter when enabled). */
  countTaskRequest(task: string, n = 1): void {
    this.taskRequests.add(task, n);
  }

  private onRequest(r: RequestReport): void {
    const kind = kindLabel(r.kind);
    const priority = r.priority === 'offline' ? 'offline' : 'online';
    this.requests.inc({ kind, outcome: r.outcome, priority });
    const missed = r.outcome === 'expired' || (r.outcome === 'ok' && r.slackMs < 0);
    if (missed) this.sloMisses.inc({ kind, priority });
    // Latency, queue wait and slack only for answered requests: refusals and
    // expiries have no service time, and would drag the percentiles down.
    if (r.outcome === 'ok') {
      if (finite(r.latencyMs)) this.requestLatency.observe({ kind, priority }, r.latencyMs / 1000);
      if (finite(r.queueWaitMs)) this.queueWait.observe({ priority }, r.queueWaitMs / 1000);
      if (finite(r.slackMs)) this.deadlineSlack.observe({ priority }, r.slackMs / 1000);
    }
    this.window.recordRequest({
      ok: r.outcome === 'ok',
      latencyMs: r.latencyMs,
      slo: r.outcome === 'ok' || r.outcome === 'expired' ? (missed ? 'missed' : 'met') : 'none',
    });
  }

  private onBatch(b: BatchReport): void {
    this.batchRequests.observe(b.rows);
    this.batchTokens.observe(b.tokens);
    this.batchTasks.observe(b.distinctTasks);
    if (b.maxBatchTokens > 0) this.batchTokenUtilization.observe(b.tokens / b.maxBatchTokens);
    if (finite(b.wallMs)) this.batchDuration.observe(b.wallMs / 1000);
    if (b.estimatedMs > 0 && finite(b.wallMs)) this.batchCostEstimate.observe(b.wallMs / b.estimatedMs);
    if (b.deviceMs) {
      if (finite(b.deviceMs.shared)) this.batchDeviceSeconds.observe({ part: 'shared' }, b.deviceMs.shared / 1000);
      const pet: Readonly<Record<string, number | undefined>> = b.deviceMs.pet;
      for (const [cls, ms] of Object.entries(pet)) {
        if (ms !== undefined && finite(ms)) this.batchDeviceSeconds.observe({ part: devicePartLabel(cls) }, ms / 1000);
      }
      this.petOverheadWindow.record({ shared: b.deviceMs.shared, pet });
    }
    this.window.recordBatch(b.rows, b.tokens);
  }

  /**
   * Bind a started engine stack (`startRuntime`'s result): device losses of its
   * GPU context, its runner's memory, its scheduler's queue. Servers and workers
   * alike call this once.
   */
  bindRuntime(runtime: { ctx: { onLost(listener: () => void): void }; runner: MemorySource; scheduler: SchedulerStatsSource }): void {
    runtime.ctx.onLost(() => this.deviceLost());
    this.bindMemory(runtime.runner);
    this.bindScheduler(runtime.scheduler);
  }

  /**
   * Export GPU/host memory and task residency read from `source` at each
   * scrape. Binding again replaces the source (after a runner rebuild).
   */
  bindMemory(source: MemorySource): void {
    const first = this.memorySource === null;
    this.memorySource = source;
    if (!first) return;
    const p = METRIC_PREFIX;
    const registers = [this.registry];
    const mem = (): MemoryReport | null => this.memorySource?.memory() ?? null;
    const gauge = (name: string, help: string, read: (m: MemoryReport) => number | null): void => {
      const g: Gauge = new Gauge({
        name: `${p}${name}`,
        help,
        registers,
        collect: () => {
          const m = mem();
          const v = m ? read(m) : null;
          g.set(v ?? Number.NaN);
        },
      });
    };
    gauge('base_model_bytes', 'GPU bytes of the shared base model weights.', (m) => m.baseModelBytes);
    gauge('activation_arena_bytes', 'GPU bytes of the activation arena (grows to the largest batch, never shrinks).', (m) => m.activationArenaBytes);
    gauge('pet_pool_used_bytes', 'GPU PET pool bytes held by resident PETs, encoder tasks and decoder adapters alike (one pool per device; whole 4 KiB pages).', (m) => m.pool?.usedBytes ?? null);
    gauge('pet_pool_budget_bytes', 'GPU PET pool size (pets.poolBytes, clamped to the adapter limit).', (m) => m.pool?.budgetBytes ?? null);
    const hostCache: Gauge = new Gauge({
      name: `${p}pet_host_cache_bytes`,
      help: 'Host bytes of packed PETs kept in memory (pets.hostCacheBytes bounds it; the rest are re-read from disk).',
      registers,
      collect: () => hostCache.set(this.memorySource?.registry?.memory().hostCachedBytes ?? Number.NaN),
    });
    const pageInMirror = new TotalMirror();
    const pageIns: Counter = new Counter({
      name: `${p}pet_page_ins_total`,
      help: 'PETs copied into the GPU pool (a task used while not resident).',
      registers,
      collect: () => {
        const pool = mem()?.pool;
        if (pool) pageIns.inc(pageInMirror.delta(pool.pageIns));
      },
    });
    const evictionMirror = new TotalMirror();
    const evictions: Counter = new Counter({
      name: `${p}pet_evictions_total`,
      help: 'PETs evicted from the GPU pool (least recently used) to make room for a page-in.',
      registers,
      collect: () => {
        const pool = mem()?.pool;
        if (pool) evictions.inc(evictionMirror.delta(pool.evictions));
      },
    });
    // Both task gauges come from one taskMemory() pass per scrape: the second
    // reads what the first computed (prom-client collects metrics in registration order).
    let byKind = new Map<string, { registered: number; resident: number }>();
    const registered: Gauge<'kind'> = new Gauge({
      name: `${p}tasks_registered`,
      help: 'Tasks registered, by PET kind.',
      labelNames: ['kind'],
      registers,
      collect: () => {
        byKind = new Map(PET_KINDS.map((k) => [k, { registered: 0, resident: 0 }]));
        for (const t of this.memorySource?.taskMemory() ?? []) {
          const label = kindLabel(t.kind);
          const e = byKind.get(label) ?? { registered: 0, resident: 0 };
          e.registered += 1;
          if (t.resident) e.resident += 1;
          byKind.set(label, e);
        }
        for (const [kind, e] of byKind) registered.set({ kind }, e.registered);
      },
    });
    const resident: Gauge<'kind'> = new Gauge({
      name: `${p}tasks_resident`,
      help: 'Tasks whose PET is resident in the GPU pool, by PET kind.',
      labelNames: ['kind'],
      registers,
      collect: () => {
        for (const [kind, e] of byKind) resident.set({ kind }, e.resident);
      },
    });
  }

  /** Export the scheduler's queue depth at each scrape. */
  bindScheduler(source: SchedulerStatsSource): void {
    const first = this.schedulerSource === null;
    this.schedulerSource = source;
    if (!first) return;
    const p = METRIC_PREFIX;
    const registers = [this.registry];
    const depth: Gauge<'priority'> = new Gauge({
      name: `${p}scheduler_queue_depth`,
      help: 'Requests waiting in the scheduler queue, by priority.',
      labelNames: ['priority'],
      registers,
      collect: () => {
        const s = this.schedulerSource?.stats();
        if (!s) return;
        depth.set({ priority: 'online' }, s.queuedOnline);
        depth.set({ priority: 'offline' }, s.queuedOffline);
      },
    });
    const capacity: Gauge = new Gauge({
      name: `${p}scheduler_queue_capacity`,
      help: 'Most requests the scheduler queues before refusing with 429 (scheduler.maxQueue).',
      registers,
      collect: () => capacity.set(this.schedulerSource?.stats().maxQueue ?? Number.NaN),
    });
    const inFlight: Gauge = new Gauge({
      name: `${p}scheduler_in_flight_batches`,
      help: 'Batches submitted to the device and not finished.',
      registers,
      collect: () => inFlight.set(this.schedulerSource?.stats().inFlightBatches ?? Number.NaN),
    });
    // The online cost model: its error falling below scheduler's threshold is what "converged" means.
    const costError: Gauge = new Gauge({
      name: `${p}cost_model_error`,
      help: "Mean relative error |predicted - measured| / measured of the cost model's last batch predictions, each made before the model learned from that batch (NaN before the first).",
      registers,
      collect: () => costError.set(this.schedulerSource?.stats().costModel?.recentError ?? Number.NaN),
    });
    const costConverged: Gauge = new Gauge({
      name: `${p}cost_model_converged`,
      help: 'Whether the online cost model has converged (1) or is still calibrating (0): until then SLO decisions are conservative.',
      registers,
      collect: () => {
        const c = this.schedulerSource?.stats().costModel;
        costConverged.set(c ? (c.phase === 'converged' ? 1 : 0) : Number.NaN);
      },
    });
    const admission: Gauge = new Gauge({
      name: `${p}admission_limit_ratio`,
      help: 'Early refusal at the default SLO: the longest predicted latency still admitted, as a fraction of the SLO (1 - margin); the margin is learned from how far recent predictions ran over. NaN without the slo policy.',
      registers,
      collect: () => {
        const a = this.schedulerSource?.stats().admission;
        admission.set(a ? a.admitsUpToMs / a.sloMs : Number.NaN);
      },
    });
    const costBatches: Gauge = new Gauge({
      name: `${p}cost_model_batches`,
      help: 'Batches the online cost model has learned from since start.',
      registers,
      collect: () => costBatches.set(this.schedulerSource?.stats().costModel?.batches ?? Number.NaN),
    });
  }

  /**
   * Export BullMQ job counts and worker count at each scrape. Redis being
   * unreachable must not fail the whole scrape: `petserve_queue_up` drops to 0
   * and the job gauges keep their last values.
   */
  bindQueue(source: QueueStatsSource): void {
    const first = this.queueSource === null;
    this.queueSource = source;
    if (!first) return;
    const p = METRIC_PREFIX;
    const registers = [this.registry];
    // One Redis round trip pair per scrape, shared by the three gauges below
    // (collected in registration order, the first one starts the read).
    let pending: Promise<QueueReading | null> | null = null;
    const read = (): Promise<QueueReading | null> => (this.queueSource ? readQueueStats(this.queueSource, this.queueTimeoutMs) : Promise.resolve(null));
    const up: Gauge = new Gauge({
      name: `${p}queue_up`,
      help: 'Whether the last read of the BullMQ queue from Redis succeeded (1) or failed (0).',
      registers,
      collect: async () => {
        pending = read();
        up.set((await pending) ? 1 : 0);
      },
    });
    const jobs: Gauge<'state'> = new Gauge({
      name: `${p}queue_jobs`,
      help: 'BullMQ jobs (chunks of offline batches) by state.',
      labelNames: ['state'],
      registers,
      collect: async () => {
        const r = await (pending ?? read());
        if (!r) return;
        for (const state of QUEUE_JOB_STATES) {
          const n = r.counts[state];
          jobs.set({ state }, n !== undefined && finite(n) ? n : 0);
        }
      },
    });
    const workers: Gauge = new Gauge({
      name: `${p}queue_workers`,
      help: 'Worker processes connected to the BullMQ queue.',
      registers,
      collect: async () => {
        const r = await (pending ?? read());
        if (r) workers.set(r.workers);
      },
    });
  }
}

/** Define PetServe's metrics on `registry` (one registry per server or worker process). */
export function createMetrics(registry: Registry, opts: MetricsOptions = {}): PetServeMetrics {
  return new PetServeMetrics(registry, opts);
}
