import type { PetKind } from '../pet/types.js';
import type { GenerationStatus } from './generation.js';
import { PET_KINDS } from '../pet/types.js';
import type { SchedulerStats } from '../scheduler/types.js';
import { QUEUE_JOB_STATES, type MemorySource, type PetServeMetrics, type QueueStatsSource, type SchedulerStatsSource } from './metrics.js';
import type { PetOverhead } from './pet-overhead.js';
import { readQueueStats } from './queue-read.js';
import type { WindowPoint, WindowSummary } from './rolling-window.js';

/**
 * Everything the status page shows, as one JSON document (`GET /v1/status`).
 * Built from interfaces only, so the HTTP layer can hand in whatever it runs
 * (a scheduler, a runner, a queue) without this module knowing their classes.
 */
export interface StatusSources {
  metrics: PetServeMetrics;
  /** Runner memory and per-task residency (a `ModelRunner`). */
  memory?: MemorySource | null;
  scheduler?: SchedulerStatsSource | null;
  queue?: QueueStatsSource | null;
  /**
   * Requests per task for the task table, when the server keeps its own
   * counts; default: the counts of `tagRequest` (metrics.taskRequests).
   */
  taskRequests?: ((taskId: string) => number) | null;
  /** Facts for the page header: model, dtype, adapter, version, ... */
  info?: (() => Record<string, string | number | boolean | null>) | null;
  /** The decoder's figures, when `serve` runs one (GenerationMetrics.status over the decoder's tasks). */
  generation?: { status(windowSeconds: number): GenerationStatus } | null;
  /** Self-tuning of each model's kernels, by model ('encoder', 'decoder'). */
  kernels?: Record<string, { status(): KernelsView }> | null;
}

/** Where a runner's kernel self-tuning stands (runtime/kernel-tuning.ts). */
export interface KernelsView {
  state: string;
  progress: { done: number; total: number } | null;
  choices: Record<string, string | number>;
  gain: Record<string, { startMs: number | null; pickedMs: number | null }> | null;
  error: string | null;
}

export interface StatusTask {
  id: string;
  kind: string;
  /** Bytes in the GPU pool when resident. */
  gpuBytes: number;
  hostBytes: number;
  resident: boolean;
  /** HTTP requests counted for this task since start. */
  requests: number;
}

export interface StatusSnapshot {
  generatedAt: string;
  uptimeSeconds: number;
  info: Record<string, string | number | boolean | null>;
  /** Last minute of traffic. */
  traffic: WindowSummary;
  /** Last five minutes in 5-second points, for the charts. */
  series: WindowPoint[];
  petOverhead: PetOverhead | null;
  scheduler: SchedulerStats | null;
  memory: {
    baseModelBytes: number;
    activationArenaBytes: number;
    petPoolUsedBytes: number | null;
    petPoolBudgetBytes: number | null;
    pageIns: number | null;
    evictions: number | null;
    hostCacheBytes: number | null;
  } | null;
  tasks: {
    registered: number;
    resident: number;
    byKind: Record<string, { registered: number; resident: number }>;
    /** The busiest tasks (then by id), at most `maxTasks`. */
    list: StatusTask[];
  };
  queue: { up: boolean; jobs: Record<string, number>; workers: number | null } | null;
  /** null without a decoder. */
  generation: GenerationStatus | null;
  /** Kernel self-tuning per model ('encoder', 'decoder'); empty when nothing reports it. */
  kernels: Record<string, KernelsView>;
}

export interface StatusOptions {
  /** Seconds the traffic summary covers. */
  windowSeconds?: number;
  seriesSeconds?: number;
  stepSeconds?: number;
  /** Rows of the task table; deployments with thousands of tasks show the busiest. */
  maxTasks?: number;
  /** How long a status request waits for Redis before showing the queue as unreachable. */
  queueTimeoutMs?: number;
}

export async function buildStatus(src: StatusSources, opts: StatusOptions = {}): Promise<StatusSnapshot> {
  const { metrics } = src;
  const requestsOf = src.taskRequests ?? ((id: string) => metrics.taskRequests.get(id));
  const mem = src.memory?.memory() ?? null;
  const taskMemory = src.memory?.taskMemory() ?? [];
  const byKind: Record<string, { registered: number; resident: number }> = {};
  for (const k of PET_KINDS as readonly PetKind[]) byKind[k] = { registered: 0, resident: 0 };
  let resident = 0;
  const rows: StatusTask[] = taskMemory.map((t) => {
    const entry = (byKind[t.kind] ??= { registered: 0, resident: 0 });
    entry.registered += 1;
    if (t.resident) {
      entry.resident += 1;
      resident += 1;
    }
    return { id: t.id, kind: t.kind, gpuBytes: t.gpuBytes, hostBytes: t.hostBytes, resident: t.resident, requests: requestsOf(t.id) };
  });
  rows.sort((a, b) => b.requests - a.requests || (a.id < b.id ? -1 : 1));

  let queue: StatusSnapshot['queue'] = null;
  if (src.queue) {
    const r = await readQueueStats(src.queue, opts.queueTimeoutMs);
    const jobs: Record<string, number> = {};
    for (const s of QUEUE_JOB_STATES) jobs[s] = r?.counts[s] ?? 0;
    queue = { up: r !== null, jobs, workers: r?.workers ?? null };
  }

  return {
    generatedAt: new Date().toISOString(),
    uptimeSeconds: Math.round(process.uptime()),
    info: src.info?.() ?? {},
    traffic: metrics.window.summary(opts.windowSeconds ?? 60),
    series: metrics.window.series(opts.seriesSeconds ?? 300, opts.stepSeconds ?? 5),
    petOverhead: metrics.petOverhead(),
    scheduler: src.scheduler?.stats() ?? null,
    kernels: Object.fromEntries(Object.entries(src.kernels ?? {}).map(([model, k]) => [model, k.status()])),
    memory: mem
      ? {
          baseModelBytes: mem.baseModelBytes,
          activationArenaBytes: mem.activationArenaBytes,
          petPoolUsedBytes: mem.pool?.usedBytes ?? null,
          petPoolBudgetBytes: mem.pool?.budgetBytes ?? null,
          pageIns: mem.pool?.pageIns ?? null,
          evictions: mem.pool?.evictions ?? null,
          hostCacheBytes: src.memory?.registry?.memory().hostCachedBytes ?? null,
        }
      : null,
    tasks: { registered: taskMemory.length, resident, byKind, list: rows.slice(0, opts.maxTasks ?? 200) },
    queue,
    generation: src.generation?.status(opts.windowSeconds ?? 60) ?? null,
  };
}
