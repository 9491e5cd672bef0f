// Records test/pet/pinned-logits.json: `node --import tsx test/pet/record-pinned-logits.ts [out.json]`.
// Run it on the code whose answers are to be pinned (it was run in a clean
// worktree of commit 06563b9, before PET kinds became modules), on llvmpipe.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { GpuContext } from '../../src/gpu/context.js';
import { silentLogger } from '../../src/util/logger.js';
import { loadDemo, pinRuns, pinTasks, type PinnedValues } from './pinned-logits-fixture.js';

const out = process.argv[2] ?? join(import.meta.dirname, 'pinned-logits.json');
const root = await mkdtemp(join(tmpdir(), 'petserve-pin-'));
const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
try {
  const demo = await loadDemo(root);
  const values: PinnedValues = {
    adapter: ctx.capabilities.adapterName,
    recordedAt: new Date().toISOString(),
    tasks: await pinTasks(demo),
    runs: await pinRuns(ctx, demo),
  };
  await writeFile(out, `${JSON.stringify(values, null, 1)}\n`);
  process.stdout.write(`wrote ${out}: ${values.tasks.length} tasks, ${values.runs.length} runs on ${values.adapter}\n`);
} finally {
  ctx.destroy();
  await rm(root, { recursive: true, force: true });
}
