/**
 * Shared setup for the scheduler experiments: one base model, N tasks of PET
 * kinds drawn uniformly, the runner, a profiled cost model, and the serving
 * systems compared (SeqS, fixed FIFO batching, PetS-style DP, ours).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner, type OutputSelection, type RunTasksOptions, type TaskRow } from '../../src/engine/model-runner.js';
import { GpuContext } from '../../src/gpu/context.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import type { PresetName } from '../../src/model/presets.js';
import { generatePet } from '../../src/pet/init-pet.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import { PET_KINDS, type PetBundle, type PetKind } from '../../src/pet/types.js';
import type { CostEstimator } from '../../src/scheduler/cost-model.js';
import { createCostModel } from '../../src/scheduler/create-scheduler.js';
import type { OnlineCostModel } from '../../src/scheduler/online-cost-model.js';
import { Scheduler, type SchedulerConfig } from '../../src/scheduler/scheduler.js';
import type { BatchReport, InferenceRequest, RequestReport } from '../../src/scheduler/types.js';
import { silentLogger } from '../../src/util/logger.js';
import { Rng } from '../../src/util/random.js';
import { benchProgress } from './progress.js';

export type SchedulerEngine = ConstructorParameters<typeof Scheduler>[0];

export interface Harness {
  ctx: GpuContext;
  base: BertCheckpoint;
  registry: TaskRegistry;
  runner: ModelRunner;
  /** Online: learns from every batch any system of the benchmark runs (shared, as one server's would be). */
  cost: OnlineCostModel;
  bundles: Map<string, PetBundle>;
  taskIds: string[];
  /** Register tasks until there are `n` (kinds drawn uniformly, seeded). */
  ensureTasks(n: number): void;
  close(): Promise<void>;
}

export async function createHarness(opts: { preset: PresetName; maxBatchTokens: number; seed?: number }): Promise<Harness> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-sched-bench-'));
  await initModel({ preset: opts.preset, outDir: root, numLabels: 2, seed: 1 });
  const base = await loadCheckpoint(root);
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  const registry = new TaskRegistry(base, { logger: silentLogger });
  const runner = await ModelRunner.create(ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 1 << 30 });
  const cost = await createCostModel(ctx, runner, { costCacheDir: '.cache/cost-model', maxBatchTokens: opts.maxBatchTokens }, silentLogger);
  const rng = new Rng(opts.seed ?? 77);
  const bundles = new Map<string, PetBundle>();
  const taskIds: string[] = [];
  return {
    ctx,
    base,
    registry,
    runner,
    cost,
    bundles,
    taskIds,
    ensureTasks(n) {
      while (taskIds.length < n) {
        const id = `t${taskIds.length}`;
        const kind = PET_KINDS[rng.int(0, PET_KINDS.length)]!;
        const bundle = generatePet({ model: base, kind, seed: 1000 + taskIds.length });
        registry.registerBundle(id, bundle);
        bundles.set(id, bundle);
        taskIds.push(id);
      }
    },
    async close() {
      await runner.dispose();
      ctx.destroy();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export interface Workload {
  requests: InferenceRequest[];
  tokens: number;
}

export function makeWorkload(rng: Rng, tasks: readonly string[], lengths: readonly number[], vocab: number): Workload {
  const requests = lengths.map(
    (len): InferenceRequest => ({
      task: tasks[rng.int(0, tasks.length)]!,
      inputIds: Array.from({ length: len }, () => rng.int(1000, vocab)),
      sloMs: 1e9,
      dropExpired: false,
    }),
  );
  return { requests, tokens: lengths.reduce((a, b) => a + b, 0) };
}

/**
 * The conventional engine: every row of a batch padded to the batch's longest
 * row (pad id 0), as fixed-batch servers and PetS's engine run. The padded rows
 * are the cost; their answers are not used by the benchmarks.
 */
export function paddedEngine(runner: SchedulerEngine): SchedulerEngine {
  return {
    registry: runner.registry,
    runTasks: (rows: readonly TaskRow[], outputs: OutputSelection, opts?: RunTasksOptions) => {
      const max = Math.max(...rows.map((r) => r.inputIds.length));
      const padded = rows.map((r) => ({ ...r, inputIds: [...r.inputIds, ...new Array<number>(max - r.inputIds.length).fill(0)] }));
      return runner.runTasks(padded, outputs, opts);
    },
  };
}

export const schedulerConfig = (over: Partial<SchedulerConfig>): SchedulerConfig => ({
  policy: 'slo',
  maxBatchTokens: 4096,
  maxBatchRows: 128,
  maxQueue: 1_000_000,
  defaultSloMs: 1e9,
  taskSloMs: {},
  maxWaitMs: 1e9,
  profileEveryBatches: 0,
  operatorScheduler: true,
  costCacheDir: null,
  ...over,
});

export interface RunStats {
  ms: number;
  tokens: number;
  requests: number;
  batches: BatchReport[];
  reports: RequestReport[];
}

/** Closed loop: everything queued at once, time until the last answer. */
export async function runClosed(engine: SchedulerEngine, cost: CostEstimator, config: SchedulerConfig, w: Workload): Promise<RunStats> {
  const batches: BatchReport[] = [];
  const reports: RequestReport[] = [];
  const s = new Scheduler(engine, config, {
    logger: silentLogger,
    cost,
    observer: { batchDone: (b) => batches.push(b), requestDone: (r) => reports.push(r) },
  });
  const progress = benchProgress(`closed loop, policy ${config.policy}`, w.requests.length, 'requests');
  try {
    const t0 = performance.now();
    await Promise.all(w.requests.map((r) => s.submit(r).then(() => progress.increment())));
    const ms = performance.now() - t0;
    await s.close();
    return { ms, tokens: w.tokens, requests: w.requests.length, batches, reports };
  } finally {
    progress.stop();
  }
}

/**
 * SeqS (PetS's baseline): one full model copy per task, each serving only its
 * own task's requests in fixed padded batches; tasks served one after another.
 * Copies are created one at a time (timing covers only serving, not loading);
 * GPU memory is what N resident copies would take.
 */
export async function runSeqS(h: Harness, w: Workload, maxRows: number): Promise<RunStats & { copyBytes: number; tasks: number }> {
  const byTask = new Map<string, InferenceRequest[]>();
  for (const r of w.requests) byTask.set(r.task!, [...(byTask.get(r.task!) ?? []), r]);
  let ms = 0;
  let copyBytes = 0;
  const batches: BatchReport[] = [];
  const progress = benchProgress('SeqS, one model copy per task', byTask.size, 'tasks');
  try {
    for (const [task, reqs] of byTask) {
      const registry = new TaskRegistry(h.base, { logger: silentLogger });
      registry.registerBundle(task, h.bundles.get(task)!);
      const runner = await ModelRunner.create(h.ctx, h.base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 64 << 20 });
      const s = new Scheduler(paddedEngine(runner), schedulerConfig({ policy: 'fifo', maxBatchRows: maxRows, operatorScheduler: false }), {
        logger: silentLogger,
        cost: h.cost,
        observer: { batchDone: (b) => batches.push(b) },
      });
      // Warm the copy (pipelines, pool page-in) outside the timed part, as a resident model would be.
      await runner.runTasks([{ task, inputIds: [1, 2, 3] }], { logits: true });
      const t0 = performance.now();
      await Promise.all(reqs.map((r) => s.submit(r)));
      ms += performance.now() - t0;
      const m = runner.memory();
      copyBytes = Math.max(copyBytes, m.baseModelBytes + (m.pool?.usedBytes ?? 0));
      await s.close();
      await runner.dispose();
      progress.increment();
    }
  } finally {
    progress.stop();
  }
  return { ms, tokens: w.tokens, requests: w.requests.length, batches, reports: [], copyBytes, tasks: byTask.size };
}

export const percentile = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

export type { PetKind };
