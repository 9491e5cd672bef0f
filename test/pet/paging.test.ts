import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelRunner, type TaskRow } from '../../src/engine/model-runner.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { initPet } from '../../src/pet/init-pet.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import { PET_KINDS } from '../../src/pet/types.js';
import { silentLogger } from '../../src/util/logger.js';
import { Rng } from '../../src/util/random.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { refBertForward, type RefBert } from '../reference/bert-f64.js';
import { expectClose, flattenNested } from '../reference/compare.js';
import { loadRefTask } from '../reference/pet-merge-f64.js';

const TASK_COUNT = 1000;
const POOL_TASKS = 50;
const VOCAB = 300;
let gpu: TestGpu;
let root: string;
let baseDir: string;
let base: BertCheckpoint;
let registry: TaskRegistry;
let runner: ModelRunner;
let poolBudget = 0;

beforeAll(async () => {
  gpu = await createTestGpu();
  root = await mkdtemp(join(tmpdir(), 'petserve-paging-'));
  baseDir = join(root, 'base');
  await initModel({ preset: 'bert-tiny', outDir: baseDir, numLabels: 2, seed: 5, vocabSize: VOCAB, maxPositions: 32 });
  base = await loadCheckpoint(baseDir);
  // Host copies of ~100 tasks stay cached; the rest are re-read from disk on page-in.
  registry = new TaskRegistry(base, { logger: silentLogger, hostCacheBytes: 100 * 60_000 });
  for (let i = 0; i < TASK_COUNT; i++) {
    const kind = PET_KINDS[i % PET_KINDS.length]!;
    const dir = join(root, `t${i}`);
    const sizing = kind === 'lora' ? { rank: 2 + (i % 7) } : kind === 'adapter' ? { bottleneck: 4 + (i % 5) } : {};
    await initPet({ model: base, kind, outDir: dir, seed: i, ...sizing });
    await registry.register(`t${i}`, dir);
  }
  // Budget: 50 average-sized tasks (pages of 4 KiB).
  const sizes = registry.list().map((t) => Math.ceil((t.packedFloats * 4 + t.packedWords * 4) / 4096) * 4096);
  poolBudget = Math.ceil(sizes.reduce((a, b) => a + b, 0) / sizes.length) * POOL_TASKS;
  runner = await ModelRunner.create(gpu.ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: poolBudget });
}, 600_000);

afterAll(async () => {
  await runner?.dispose();
  gpu?.destroy();
  await rm(root, { recursive: true, force: true });
});

describe('1000 registered tasks served through a pool that holds ~50', () => {
  it('every answer equals its merged-model reference; resident bytes never exceed the budget', async () => {
    const rng = new Rng(Date.now() % 1_000_000);
    const refs = new Map<string, RefBert>();
    const stats = runner.memory().pool!;
    expect(stats.budgetBytes).toBeLessThanOrEqual(poolBudget);
    for (let batch = 0; batch < 30; batch++) {
      const rows: TaskRow[] = Array.from({ length: 12 }, () => ({
        task: `t${rng.int(0, TASK_COUNT)}`,
        inputIds: Array.from({ length: rng.int(1, 20) }, () => rng.int(0, VOCAB)),
      }));
      const got = await runner.runTasks(rows, { logits: true, pooled: true });
      const pool = runner.memory().pool!;
      expect(pool.usedBytes).toBeLessThanOrEqual(pool.budgetBytes);
      rows.forEach((row, i) => {
        const id = row.task!;
        let ref = refs.get(id);
        if (!ref) refs.set(id, (ref = loadRefTask(baseDir, join(root, id))));
        const want = refBertForward(ref, [row.inputIds as number[]]);
        const g = got.rows[i]!;
        expectClose(g.pooled!, flattenNested(want.poolerOutput[0]!), 1e-4, `batch ${batch} row ${i} (${id}) pooled`);
        if (want.logits) expectClose(g.logits!, flattenNested(want.logits[0]!), 1e-4, `batch ${batch} row ${i} (${id}) logits`);
      });
    }
    const end = runner.memory().pool!;
    expect(end.pageIns).toBeGreaterThan(POOL_TASKS);
    expect(end.evictions).toBeGreaterThan(0);
    expect(end.residentTasks).toBeLessThanOrEqual(POOL_TASKS * 2);
    const mem = registry.memory();
    expect(mem.hostCachedBytes).toBeLessThan(mem.hostTotalBytes);
  });

  it('per-task memory accounting lists every task with host and GPU bytes', () => {
    const tasks = runner.taskMemory();
    expect(tasks).toHaveLength(TASK_COUNT);
    for (const t of tasks) {
      expect(t.hostBytes).toBeGreaterThan(0);
      expect(t.gpuBytes).toBeGreaterThan(0);
    }
    expect(tasks.filter((t) => t.resident).length).toBe(runner.memory().pool!.residentTasks);
  });
});
