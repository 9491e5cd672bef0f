/**
 * f16 storage vs f32 on the demo model and its tasks (every PET kind of the demo): the same requests run
 * through one f32 and one f16 runner on this adapter; the report gives the largest |Δ| of the
 * probabilities and logits per task, and how often the top label agrees. This is the fidelity bound
 * behind model.dtype 'auto' (src/runtime/dtype-choice.ts). Needs shader-f16.
 *
 *   npm run bench -- f16 [--requests 64] [--out DIR]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner } from '../src/engine/model-runner.js';
import { GpuContext } from '../src/gpu/context.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { TaskRegistry } from '../src/pet/registry.js';
import { ensureDemo } from '../src/runtime/demo.js';
import { registerTaskDirectories } from '../src/runtime/task-dirs.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { adapterSlug, commandLine, fileStamp, machineInfo, markdownTable, textTable, writeReport } from './lib/report.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');
const REQUESTS = Number(args.get('requests') ?? 64);

const ctx = await GpuContext.create({}, silentLogger);
if (!ctx.capabilities.shaderF16) {
  console.error(`adapter ${ctx.capabilities.adapterName} has no shader-f16: nothing to compare`);
  process.exit(2);
}
const demoDir = await mkdtemp(join(tmpdir(), 'petserve-f16-'));
try {
  const layout = await ensureDemo(join(demoDir, 'demo'), silentLogger);
  const checkpoint = await loadCheckpoint(layout.modelDir);
  const registry = new TaskRegistry(checkpoint, { logger: silentLogger, baseModelId: 'demo-base' });
  await registerTaskDirectories(registry, layout.tasksDir, { logger: silentLogger, onInvalid: 'fail' });
  const tasks = [null, ...registry.list().map((t) => t.id)];
  const rng = new Rng(5);
  const vocab = checkpoint.config.vocabSize;
  const rows = Array.from({ length: REQUESTS }, (_, i) => ({
    task: tasks[i % tasks.length]!,
    inputIds: Array.from({ length: rng.int(4, 96) }, () => rng.int(1000, vocab)),
  }));
  const run = async (dtype: 'f32' | 'f16'): Promise<{ logits: Float32Array | null; pooled: Float32Array }[]> => {
    const runner = await ModelRunner.create(ctx, checkpoint, { dtype, logger: silentLogger, registry, poolBytes: 64 << 20 });
    try {
      const out: { logits: Float32Array | null; pooled: Float32Array }[] = [];
      for (let i = 0; i < rows.length; i += 16) {
        const r = await runner.runTasks(rows.slice(i, i + 16), { logits: true, pooled: true });
        // Tasks without a head (embeddings) are compared on the pooled output.
        out.push(...r.rows.map((row) => ({ logits: row.logits ?? null, pooled: row.pooled! })));
      }
      return out;
    } finally {
      await runner.dispose();
    }
  };
  const f32 = await run('f32');
  const f16 = await run('f16');
  const softmax = (l: Float32Array): number[] => {
    const m = Math.max(...l);
    const e = Array.from(l, (v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  const argmax = (x: ArrayLike<number>): number => Array.from(x).reduce((best, v, i, a) => (v > a[best]! ? i : best), 0);
  const byTask = new Map<string, { n: number; maxLogit: number; maxProb: number; agree: number; head: boolean }>();
  rows.forEach((row, i) => {
    const key = row.task ?? 'demo-base (no PET)';
    const x = f32[i]!;
    const y = f16[i]!;
    const e = byTask.get(key) ?? { n: 0, maxLogit: 0, maxProb: 0, agree: 0, head: x.logits !== null };
    e.n += 1;
    if (x.logits === null || y.logits === null) {
      for (let j = 0; j < x.pooled.length; j++) e.maxLogit = Math.max(e.maxLogit, Math.abs(x.pooled[j]! - y.pooled[j]!));
      byTask.set(key, e);
      return;
    }
    const a = x.logits;
    const b = y.logits;
    const pa = softmax(a);
    const pb = softmax(b);
    for (let j = 0; j < a.length; j++) {
      e.maxLogit = Math.max(e.maxLogit, Math.abs(a[j]! - b[j]!));
      e.maxProb = Math.max(e.maxProb, Math.abs(pa[j]! - pb[j]!));
    }
    if (argmax(a) === argmax(b)) e.agree += 1;
    byTask.set(key, e);
  });
  const kindOf = (id: string): string => registry.list().find((t) => t.id === id)?.kind ?? 'base';
  const table = {
    title: `f16 vs f32 storage on the demo tasks (${REQUESTS} requests, lengths 4–95)`,
    headers: ['task', 'kind', 'requests', 'max |Δ logit| (pooled output without a head)', 'max |Δ probability|', 'same top label'],
    rows: [...byTask].map(([id, e]) => [
      id,
      kindOf(id),
      String(e.n),
      `${e.maxLogit.toExponential(2)}${e.head ? '' : ' (pooled)'}`,
      e.head ? e.maxProb.toExponential(2) : '-',
      e.head ? `${e.agree}/${e.n}` : '-',
    ]),
  };
  console.log(textTable(table));
  const date = new Date();
  const adapter = ctx.capabilities.adapterName;
  const m = machineInfo();
  const md = [
    '# f16 storage fidelity on the demo tasks',
    '',
    `- command: \`npm run bench -- f16 ${process.argv.slice(2).join(' ')}\``,
    `- adapter: ${adapter}; machine: ${m.cpuModel} (${m.cpuCores} cores); ${date.toISOString()}`,
    '- Same requests through an f32 and an f16 runner (f16 weights, activations and PETs; f32 accumulation). The kernel tests bound f16 against the float64 reference at 2e-2.',
    '',
    markdownTable(table),
  ].join('\n');
  const stem = `f16-fidelity-${adapterSlug(adapter)}-${fileStamp(date)}`;
  await writeReport(args.get('out') ?? 'bench/results', stem, { command: commandLine(), machine: m, adapter, date: date.toISOString(), rows: table.rows }, md);
  console.log(`wrote ${args.get('out') ?? 'bench/results'}/${stem}.{json,md}`);
} finally {
  await rm(demoDir, { recursive: true, force: true });
  ctx.destroy();
}
