import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner, type TaskRow } from './src/engine/model-runner.ts';
import { GpuContext } from './src/gpu/context.ts';
import { loadCheckpoint } from './src/model/checkpoint.ts';
import { initModel } from './src/model/init-model.ts';
import { generatePet } from './src/pet/init-pet.ts';
import { TaskRegistry } from './src/pet/registry.ts';
import { PET_KINDS } from './src/pet/types.ts';
import { silentLogger } from './src/util/logger.ts';
import { Rng } from './src/util/random.ts';
const root = await mkdtemp(join(tmpdir(), 'prof-'));
await initModel({ preset: 'bert-mini', outDir: root, numLabels: 2, seed: 1 });
const base = await loadCheckpoint(root);
const ctx = await GpuContext.create({}, silentLogger);
const registry = new TaskRegistry(base, { logger: silentLogger });
const ids: string[] = [];
for (let i = 0; i < 64; i++) { registry.registerBundle(`m${i}`, generatePet({ model: base, kind: PET_KINDS[i % 6]!, seed: 1000 + i })); ids.push(`m${i}`); }
const runner = await ModelRunner.create(ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 256 << 20 });
const rng = new Rng(7);
const rows: TaskRow[] = [];
for (const t of ids) for (let i = 0; i < 2; i++) rows.push({ task: t, inputIds: Array.from({ length: 16 }, () => rng.int(0, 30000)) });
const kindFilter = process.argv[2];
const sel = kindFilter ? rows.filter((r) => PET_KINDS[Number(r.task!.slice(1)) % 6] === kindFilter) : rows;
for (const [name, rs] of [['pets', sel], ['base', sel.map((r) => ({ ...r, task: null }))]] as const) {
  await runner.runTasks(rs, { logits: true });
  const r = await runner.runTasks(rs, { logits: true }, { profile: 'dispatches' });
  const agg = new Map<string, number>();
  for (const p of r.phases!) { const k = p.name.replace(/^l\d+\./, ''); agg.set(k, (agg.get(k) ?? 0) + p.ms); }
  const total = [...agg.values()].reduce((a, b) => a + b, 0);
  console.log(name, 'total', total.toFixed(1), [...agg].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v.toFixed(1)}`).join(' '));
}
await runner.dispose(); ctx.destroy();
