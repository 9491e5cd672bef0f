import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelRunner, type TaskRowResult } from '../../src/engine/model-runner.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { generatePet } from '../../src/pet/init-pet.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import { PET_KINDS } from '../../src/pet/types.js';
import { loadOrProfileCostModel } from '../../src/scheduler/cost-profiler.js';
import type { LinearCostModel } from '../../src/scheduler/cost-model.js';
import { Scheduler, type SchedulerConfig } from '../../src/scheduler/scheduler.js';
import type { BatchReport, InferenceRequest } from '../../src/scheduler/types.js';
import { silentLogger } from '../../src/util/logger.js';
import { Rng } from '../../src/util/random.js';
import { expectClose } from '../reference/compare.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';

/** The scheduler over the real engine (lavapipe): batching never changes an answer. */
let gpu: TestGpu;
let root: string;
let base: BertCheckpoint;
let runner: ModelRunner;
let cost: LinearCostModel;
const TASKS = [...PET_KINDS.map((k) => ({ id: k, kind: k })), { id: 'lora-embed', kind: 'lora' as const }];

const config = (over: Partial<SchedulerConfig>): SchedulerConfig => ({
  policy: 'slo',
  maxBatchTokens: 512,
  maxBatchRows: 16,
  maxQueue: 1000,
  defaultSloMs: 600_000,
  taskSloMs: {},
  maxWaitMs: 600_000,
  profileEveryBatches: 0,
  operatorScheduler: true,
  costCacheDir: null,
  ...over,
});

beforeAll(async () => {
  gpu = await createTestGpu();
  root = await mkdtemp(join(tmpdir(), 'petserve-sched-'));
  await initModel({ preset: 'bert-tiny', outDir: join(root, 'base'), numLabels: 2, seed: 3, vocabSize: 300, maxPositions: 64 });
  base = await loadCheckpoint(join(root, 'base'));
  const registry = new TaskRegistry(base, { logger: silentLogger });
  TASKS.forEach((t, i) =>
    registry.registerBundle(t.id, generatePet({ model: base, kind: t.kind, seed: 50 + i, ...(t.id === 'lora-embed' ? { numLabels: 0 } : {}) })),
  );
  runner = await ModelRunner.create(gpu.ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 256 << 20 });
  const key = { adapter: gpu.ctx.capabilities.adapterName, model: base.config, dtype: 'f32', engineVersion: 'test' };
  cost = await loadOrProfileCostModel(runner, key, join(root, 'cache'), { logger: silentLogger, maxTokens: 256, reps: 1 });
});

afterAll(async () => {
  await runner?.dispose();
  gpu?.destroy();
  await rm(root, { recursive: true, force: true });
});

describe('Scheduler on the engine', () => {
  it('profiles a cost model with non-negative terms, caches it, and reloads it without profiling', async () => {
    const c = cost.coef;
    for (const v of [c.fixedMs, c.perRowMs, c.perTokenMs, c.perSqLenMs, c.perTaskMs, ...Object.values(c.perKindTokenMs)]) {
      expect(v).toBeGreaterThanOrEqual(0);
      expect(Number.isFinite(v)).toBe(true);
    }
    expect(Object.keys(c.perKindTokenMs).sort()).toEqual([...PET_KINDS].sort());
    // More tokens never cost less.
    const f = (tokens: number) => cost.estimateMs({ rows: 4, tokens, sumSqLen: (tokens * tokens) / 4, kindTokens: {}, distinctTasks: 0 });
    expect(f(256)).toBeGreaterThan(f(16));
    const files = await readdir(join(root, 'cache'));
    expect(files).toHaveLength(1);
    const before = (await stat(join(root, 'cache', files[0]!))).mtimeMs;
    const key = { adapter: gpu.ctx.capabilities.adapterName, model: base.config, dtype: 'f32', engineVersion: 'test' };
    const t0 = performance.now();
    const again = await loadOrProfileCostModel(runner, key, join(root, 'cache'), { logger: silentLogger, maxTokens: 256 });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(again.coef).toEqual(cost.coef);
    expect((await stat(join(root, 'cache', files[0]!))).mtimeMs).toBe(before);
    // The temporary profiling tasks are gone.
    expect(runner.registry!.list().map((t) => t.id).sort()).toEqual(TASKS.map((t) => t.id).sort());
  });

  it('gives every request the answer it gets alone, whatever the policy groups it with', async () => {
    const rng = new Rng(21);
    const reqs: InferenceRequest[] = Array.from({ length: 40 }, (_, i) => ({
      task: i % 8 === 7 ? null : TASKS[i % TASKS.length]!.id,
      inputIds: Array.from({ length: rng.int(1, 64) }, () => rng.int(0, 300)),
      pooled: true,
    }));
    const alone: TaskRowResult[] = [];
    for (const r of reqs) alone.push((await runner.runTasks([{ task: r.task, inputIds: r.inputIds }], { logits: true, pooled: true })).rows[0]!);
    for (const policy of ['fifo', 'pets', 'slo'] as const) {
      const batches: BatchReport[] = [];
      const s = new Scheduler(runner, config({ policy }), { logger: silentLogger, cost, observer: { batchDone: (b) => batches.push(b) } });
      const got = await Promise.all(reqs.map((r) => s.submit(r)));
      expect(batches.length).toBeLessThan(reqs.length);
      expect(Math.max(...batches.map((b) => b.rows))).toBeGreaterThan(1);
      got.forEach((g, i) => {
        if (alone[i]!.logits) expectClose(g.logits!, alone[i]!.logits!, 1e-4, `logits ${i}`);
        else expect(g.logits).toBeNull();
        expectClose(g.pooled!, alone[i]!.pooled!, 1e-4, `pooled ${i}`);
      });
      await s.close();
    }
  });

  it('reports device time split into shared and PET op classes when profiling', async () => {
    const batches: BatchReport[] = [];
    const s = new Scheduler(runner, config({ profileEveryBatches: 1 }), { logger: silentLogger, cost, observer: { batchDone: (b) => batches.push(b) } });
    await Promise.all(['lora', 'adapter', 'mask'].map((task) => s.submit({ task, inputIds: [1, 2, 3, 4, 5, 6, 7, 8] })));
    const d = batches[0]!.deviceMs!;
    expect(d.total).toBeGreaterThan(0);
    expect(d.shared).toBeGreaterThan(0);
    expect(d.pet['lora']).toBeGreaterThan(0);
    expect(d.pet['adapter']).toBeGreaterThan(0);
    expect(d.pet['sparse']).toBeGreaterThan(0);
    expect(d.shared + Object.values(d.pet).reduce((a, b) => a + b, 0)).toBeCloseTo(d.total, 6);
    await s.close();
  });
});
