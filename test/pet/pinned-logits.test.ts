import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';
import { loadDemo, pinRuns, pinTasks, type PinnedRun, type PinnedTask, type PinnedValues } from './pinned-logits-fixture.js';

/**
 * Answers of the demo tasks (one per PET kind) on a fixed input set, pinned
 * from the code before PET kinds became modules (commit 06563b9, recorded by
 * test/pet/record-pinned-logits.ts on llvmpipe). A refactor that claims
 * "behaviour unchanged" must leave them bit-identical: the generated files,
 * the packed PETs (host, any machine), and on the recording adapter the
 * logits and pooled values of every row, exactly. On another adapter the GPU
 * rounds differently; there the values must still lie within the reference
 * tolerances (f32 1e-4, f16 2e-2, as test/pet/engine-pets.test.ts).
 * Re-pinned once on purpose, 2026-12-03, when the default kernels changed (gemm_sgx, the lanes attention
 * form; same record script): files and packed PETs unchanged, logits and pooled values moved by at most
 * 8.3e-7 (f32) and 9.8e-4 (f16) from the 06563b9 values.
 */
const pinned = JSON.parse(await readFile(join(import.meta.dirname, 'pinned-logits.json'), 'utf8')) as PinnedValues;

let root: string;
let tasks: PinnedTask[];
let gpu: TestGpu;
let runs: PinnedRun[];

// Generating the demo and running it four times takes ~20 s alone; on two
// cores shared with other suites it has taken over 120 s (the default hook timeout).
const SETUP_TIMEOUT_MS = 600_000;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-pinned-'));
  const demo = await loadDemo(root);
  tasks = await pinTasks(demo);
  gpu = await createTestGpu();
  runs = await pinRuns(gpu.ctx, demo);
}, SETUP_TIMEOUT_MS);
afterAll(async () => {
  gpu?.destroy();
  await rm(root, { recursive: true, force: true });
});

describe('demo tasks are generated, written and packed exactly as before', () => {
  for (const want of pinned.tasks) {
    it(`${want.id} (${want.kind}): file and packed-block hashes`, () => {
      expect(tasks.find((t) => t.id === want.id)).toEqual(want);
    });
  }
});

describe('demo tasks answer exactly as before on a fixed mixed batch', () => {
  for (const want of pinned.runs) {
    it(`${want.name}: logits and pooled values bit-identical on ${pinned.adapter}`, ({ skip }) => {
      const got = runs.find((r) => r.name === want.name);
      if (!got) skip(`this adapter cannot run "${want.name}"`);
      if (gpu.ctx.capabilities.adapterName !== pinned.adapter) {
        skip(`recorded on ${pinned.adapter}, running on ${gpu.ctx.capabilities.adapterName}: see the tolerance test`);
      }
      // A JS number holds an f32 exactly, so toEqual compares bit patterns (Object.is per value).
      expect(got!.rows).toEqual(want.rows);
    });

    it(`${want.name}: within the reference tolerance on any adapter`, ({ skip }) => {
      const got = runs.find((r) => r.name === want.name);
      if (!got) skip(`this adapter cannot run "${want.name}"`);
      const tol = want.name.startsWith('f16') ? 2e-2 : 1e-4;
      want.rows.forEach((w, i) => {
        const g = got!.rows[i]!;
        expect(g.task).toBe(w.task);
        expectClose(Float32Array.from(g.pooled), w.pooled, tol, `row ${i} pooled`);
        if (w.logits === null) expect(g.logits, `row ${i}: embedding task has no logits`).toBeNull();
        else expectClose(Float32Array.from(g.logits!), w.logits, tol, `row ${i} logits`);
      });
    });
  }
});
