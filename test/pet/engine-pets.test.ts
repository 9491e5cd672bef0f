import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelRunner, type TaskRow } from '../../src/engine/model-runner.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { writePetBundle } from '../../src/pet/formats/bundle.js';
import { generatePet, initPet } from '../../src/pet/init-pet.js';
import { TaskRegistry, UnknownTaskError } from '../../src/pet/registry.js';
import { PET_KINDS, type PetKind } from '../../src/pet/types.js';
import { silentLogger } from '../../src/util/logger.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { loadRefBert, refBertForward, type RefBert } from '../reference/bert-f64.js';
import { expectClose, flattenNested } from '../reference/compare.js';
import { loadRefTask } from '../reference/pet-merge-f64.js';

/**
 * The PET invariant: every row of a batch, whatever else shares the batch,
 * equals the float64 reference of its task's MERGED model (W + ΔW, masked W,
 * replaced biases/LayerNorms, IA³-scaled weights, adapters inserted).
 */
// Created at load time so the f16 test can be skipped (and reported as skipped) without shader-f16.
const gpu: TestGpu = await createTestGpu();
const hasF16 = gpu.ctx.capabilities.shaderF16;
let root: string;
let baseDir: string;
let base: BertCheckpoint;
let registry: TaskRegistry;
let runner: ModelRunner;
let runner16: ModelRunner | null = null;
const refs = new Map<string, RefBert>();
const VOCAB = 500;
// Tasks: one per kind, plus an embedding task (no head) and a second LoRA of another rank.
const TASKS: { id: string; kind: PetKind; numLabels?: number; rank?: number }[] = [
  ...PET_KINDS.map((kind) => ({ id: kind, kind })),
  { id: 'lora-embed', kind: 'lora' as const, numLabels: 0, rank: 3 },
  { id: 'lora-r16', kind: 'lora' as const, numLabels: 5, rank: 16 },
];

/** Tasks that cover only some column blocks of a GEMM (registered in beforeAll; used in mixed batches). */
const PARTIAL_TASKS: { id: string; kind: PetKind }[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-pets-'));
  baseDir = join(root, 'base');
  await initModel({ preset: 'bert-mini', outDir: baseDir, numLabels: 3, seed: 11, vocabSize: VOCAB, maxPositions: 64 });
  base = await loadCheckpoint(baseDir);
  registry = new TaskRegistry(base, { logger: silentLogger });
  for (const [i, t] of TASKS.entries()) {
    const dir = join(root, t.id);
    await initPet({ model: base, kind: t.kind, outDir: dir, seed: 100 + i, numLabels: t.numLabels, rank: t.rank });
    await registry.register(t.id, dir);
    refs.set(t.id, loadRefTask(baseDir, dir));
  }
  // Partial coverage of the fused QKV GEMM: LoRA on query (layer 0) and value (layer 1)
  // only, diff on key only, so unflagged column blocks of the delta buffer must be ignored.
  const partial: [string, PetKind, (site: { layer: number; site: string }) => boolean][] = [
    ['lora-partial', 'lora', (x) => (x.layer === 0 && x.site === 'query') || (x.layer === 1 && x.site === 'value')],
    ['diff-key', 'diff', (x) => x.site === 'key'],
  ];
  for (const [id, kind, keep] of partial) {
    const bundle = generatePet({ model: base, kind, seed: 77 });
    if (bundle.pet.kind === 'lora' || bundle.pet.kind === 'diff') {
      (bundle.pet.sites as { layer: number; site: string }[]).splice(0, Infinity, ...bundle.pet.sites.filter(keep));
    }
    const dir = join(root, id);
    await writePetBundle(dir, bundle, base.config);
    await registry.register(id, dir);
    refs.set(id, loadRefTask(baseDir, dir));
    PARTIAL_TASKS.push({ id, kind });
  }
  refs.set('', loadRefBert(baseDir));
  runner = await ModelRunner.create(gpu.ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 64 << 20 });
  if (hasF16) {
    runner16 = await ModelRunner.create(gpu.ctx, base, { dtype: 'f16', logger: silentLogger, registry, poolBytes: 64 << 20 });
  }
});
afterAll(async () => {
  await runner?.dispose();
  await runner16?.dispose();
  gpu.destroy();
  await rm(root, { recursive: true, force: true });
});

function randomRow(task: string | null, maxLen = 24): TaskRow {
  const len = 1 + Math.floor(Math.random() * maxLen);
  return { task, inputIds: Array.from({ length: len }, () => Math.floor(Math.random() * VOCAB)) };
}

async function checkRows(r: ModelRunner, rows: TaskRow[], tol: number): Promise<void> {
  const got = await r.runTasks(rows, { logits: true, pooled: true, lastHiddenState: true });
  rows.forEach((row, i) => {
    const ref = refs.get(row.task ?? '')!;
    const want = refBertForward(ref, [row.inputIds as number[]]);
    const label = `row ${i} (task ${row.task ?? 'base'})`;
    const g = got.rows[i]!;
    expectClose(g.lastHiddenState!, flattenNested(want.lastHiddenState[0]!), tol, `${label} hidden`);
    expectClose(g.pooled!, flattenNested(want.poolerOutput[0]!), tol, `${label} pooled`);
    if (want.logits) expectClose(g.logits!, flattenNested(want.logits[0]!), tol, `${label} logits`);
    else expect(g.logits, `${label}: embedding task has no logits`).toBeNull();
  });
}

describe('each PET kind equals the float64 reference of its merged model', () => {
  for (const t of TASKS) {
    it(`${t.id} (${t.kind})`, async () => {
      await checkRows(runner, [randomRow(t.id), randomRow(t.id), randomRow(t.id, 60)], 1e-4);
    });
  }

  it('the PET changes the answer (the deltas are not silently dropped)', async () => {
    const row = randomRow(null);
    for (const t of TASKS) {
      const [b, p] = (await runner.runTasks([row, { ...row, task: t.id }], { pooled: true })).rows;
      let diff = 0;
      for (let i = 0; i < b!.pooled!.length; i++) diff = Math.max(diff, Math.abs(b!.pooled![i]! - p!.pooled![i]!));
      expect(diff, `${t.id} pooled output differs from the base`).toBeGreaterThan(1e-3);
    }
  });
});

describe('mixed batches', () => {
  it('all kinds plus base rows, shuffled, in one batch: every row equals its reference (f32 ≤ 1e-4)', async () => {
    const rows: TaskRow[] = [];
    for (const t of [...TASKS, ...PARTIAL_TASKS]) rows.push(randomRow(t.id), randomRow(t.id));
    rows.push(randomRow(null), randomRow(null));
    rows.sort(() => Math.random() - 0.5);
    await checkRows(runner, rows, 1e-4);
  });

  it.skipIf(!hasF16)('f16 storage: the same mixed batch within 2e-2 (needs shader-f16)', async () => {
    const rows: TaskRow[] = TASKS.map((t) => randomRow(t.id));
    rows.push(randomRow(null));
    rows.sort(() => Math.random() - 0.5);
    await checkRows(runner16!, rows, 2e-2);
  });

  it("a row's answer does not depend on its batch-mates", async () => {
    const probe = randomRow('adapter');
    const alone = (await runner.runTasks([probe], { logits: true })).rows[0]!;
    const crowd = TASKS.map((t) => randomRow(t.id));
    const mixed = (await runner.runTasks([...crowd, probe], { logits: true })).rows.at(-1)!;
    expectClose(mixed.logits!, alone.logits!, 1e-6, 'probe logits');
  });

  it('one dispatch per task (the benchmark baseline) gives the same answers as segmented dispatch', async () => {
    const perTask = await ModelRunner.create(gpu.ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 256 << 20, perTaskDispatch: true });
    try {
      const rows: TaskRow[] = TASKS.map((t) => randomRow(t.id));
      const a = await runner.runTasks(rows, { logits: true, pooled: true });
      const b = await perTask.runTasks(rows, { logits: true, pooled: true });
      rows.forEach((_, i) => expectClose(b.rows[i]!.pooled!, a.rows[i]!.pooled!, 1e-6, `row ${i} pooled`));
    } finally {
      await perTask.dispose();
    }
  });

  it('unknown tasks are refused before the GPU runs', async () => {
    await expect(runner.runTasks([randomRow('nope')], { logits: true })).rejects.toBeInstanceOf(UnknownTaskError);
  });

  it("a bad token id in a mixed batch is refused naming the caller's row, though the plan reorders rows", async () => {
    // Rows of several tasks: the plan groups them by task, so caller row 2 is not plan row 2.
    const rows = [randomRow(TASKS[1]!.id), randomRow(null), { task: TASKS[0]!.id, inputIds: [1, 2, VOCAB + 5] }, randomRow(TASKS[1]!.id)];
    await expect(runner.runTasks(rows, { logits: true })).rejects.toThrow(/^input_ids\[2\]\[2\]: .* is not a token id/);
  });
});
