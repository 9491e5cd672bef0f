import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelRunner, type TaskRow } from '../../src/engine/model-runner.js';
import { buildPetPlan } from '../../src/engine/pet-plan.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { writePetBundle } from '../../src/pet/formats/bundle.js';
import type { ResidentPet } from '../../src/pet/gpu-pool.js';
import { generatePet } from '../../src/pet/init-pet.js';
import { packPet } from '../../src/pet/pack.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import type { PetKind } from '../../src/pet/types.js';
import { activeSlotSites, analysePetOps, scheduleOperators } from '../../src/scheduler/operator-scheduler.js';
import { silentLogger } from '../../src/util/logger.js';
import { Rng } from '../../src/util/random.js';
import { loadRefTask } from '../reference/pet-merge-f64.js';
import { refBertForward, type RefBert } from '../reference/bert-f64.js';
import { expectClose, flattenNested } from '../reference/compare.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';

/**
 * The operator scheduler changes which kernels run (plain kernels at sites no
 * row touches, sparse deltas recorded between LoRA shrink and expand); every
 * answer must still equal the float64 reference of its task's merged model.
 */
let gpu: TestGpu;
let root: string;
let base: BertCheckpoint;
let runner: ModelRunner;
const refs = new Map<string, RefBert>();
// LoRA and diff on the query block only: most sites of a batch of them stay plain.
const TASKS: { id: string; kind: PetKind; queryOnly?: boolean }[] = [
  { id: 'lora-q', kind: 'lora', queryOnly: true },
  { id: 'diff-q', kind: 'diff', queryOnly: true },
  { id: 'mask', kind: 'mask' },
  { id: 'lora', kind: 'lora' },
  { id: 'bitfit', kind: 'bitfit' },
  { id: 'ia3', kind: 'ia3' },
  { id: 'adapter', kind: 'adapter' },
];

beforeAll(async () => {
  gpu = await createTestGpu();
  root = await mkdtemp(join(tmpdir(), 'petserve-ops-'));
  const baseDir = join(root, 'base');
  await initModel({ preset: 'bert-tiny', outDir: baseDir, numLabels: 2, seed: 5, vocabSize: 200, maxPositions: 48 });
  base = await loadCheckpoint(baseDir);
  const registry = new TaskRegistry(base, { logger: silentLogger });
  for (const [i, t] of TASKS.entries()) {
    const bundle = generatePet({ model: base, kind: t.kind, seed: 300 + i });
    if (t.queryOnly && (bundle.pet.kind === 'lora' || bundle.pet.kind === 'diff')) {
      const sites = bundle.pet.sites as { layer: number; site: string }[];
      sites.splice(0, Infinity, ...sites.filter((s) => s.site === 'query'));
    }
    const dir = join(root, t.id);
    await writePetBundle(dir, bundle, base.config);
    await registry.register(t.id, dir);
    refs.set(t.id, loadRefTask(baseDir, dir));
  }
  runner = await ModelRunner.create(gpu.ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 256 << 20 });
});

afterAll(async () => {
  await runner?.dispose();
  gpu?.destroy();
  await rm(root, { recursive: true, force: true });
});

const rowsOf = (tasks: string[], seed: number): TaskRow[] => {
  const rng = new Rng(seed);
  return tasks.map((task) => ({ task, inputIds: Array.from({ length: rng.int(1, 48) }, () => rng.int(0, 200)) }));
};

describe('operator scheduler', () => {
  it('marks only the sites some row touches as active', () => {
    const bundle = generatePet({ model: base, kind: 'lora', seed: 1 });
    if (bundle.pet.kind !== 'lora') throw new Error('expected a LoRA');
    const sites = bundle.pet.sites as { layer: number; site: string }[];
    sites.splice(0, Infinity, ...sites.filter((s) => s.site === 'query' && s.layer === 1));
    const resident: ResidentPet = { taskId: 'x', packed: packPet(bundle, base), floatBase: 0, wordBase: 0, bytes: 0, firstPage: 0, pageCount: 0, pins: 0, lastUsed: 0 };
    const plan = buildPetPlan(base.config, base.family, [{ task: resident, inputIds: [1, 2, 3] }, { task: null, inputIds: [4, 5] }], 2);
    const active = activeSlotSites(plan);
    expect(active[base.family.sites.slotSiteIndex(base.config, 1, 'qkv')]).toBe(1);
    // Its head lives in the task-head GEMM, not in the slot table; everything else is plain.
    expect([...active].reduce((a, b) => a + b, 0)).toBe(1);
    const ops = analysePetOps(plan, 4);
    expect(ops.map((o) => o.op).sort()).toEqual(['lora_expand', 'lora_shrink', 'task_heads']);
    for (const o of ops) {
      expect(o.flops).toBeGreaterThan(0);
      expect(o.intensity).toBeCloseTo(o.flops / o.bytes, 12);
    }
  });

  it('keeps every answer equal to the float64 reference with the operator scheduler on', async () => {
    const batches = [
      ['lora-q', 'diff-q', 'lora-q', 'diff-q'],
      ['lora-q', 'diff-q', 'mask', 'lora', 'bitfit', 'ia3', 'adapter', 'lora-q'],
      ['bitfit', 'ia3'],
    ];
    for (const [b, tasks] of batches.entries()) {
      const rows = rowsOf(tasks, 40 + b);
      let decisions: ReturnType<typeof scheduleOperators> | null = null;
      const got = await runner.runTasks(
        rows,
        { logits: true, pooled: true },
        { operators: (plan, cfg, e) => (decisions = scheduleOperators(plan, cfg, e)) },
      );
      expect(decisions).not.toBeNull();
      const d = decisions as unknown as ReturnType<typeof scheduleOperators>;
      if (b === 0) {
        // Only the fused QKV GEMM of each layer is task-aware.
        expect([...d.activeSlotSites!].reduce((a, x) => a + x, 0)).toBe(base.config.numHiddenLayers);
        expect(d.interleaveSparse).toBe(true);
      }
      rows.forEach((row, i) => {
        const want = refBertForward(refs.get(row.task!)!, [row.inputIds as number[]]);
        const g = got.rows[i]!;
        expectClose(g.pooled!, flattenNested(want.poolerOutput[0]!), 1e-4, `batch ${b} row ${i} pooled`);
        expectClose(g.logits!, flattenNested(want.logits![0]!), 1e-4, `batch ${b} row ${i} logits`);
      });
    }
  });
});
