/**
 * Op-level device-time profile of one mixed PET batch vs the same tokens on the
 * base model: every dispatch is its own timestamped pass; times are summed per
 * op (layers folded together) and averaged over `--reps` runs. Shows where PET
 * overhead goes (input for the operator scheduler).
 *
 *   npm run bench:profile [-- --model bert-mini] [--tasks 64] [--kinds lora,mask] [--reps 3]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner, type TaskRow } from '../src/engine/model-runner.js';
import { GpuContext } from '../src/gpu/context.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { initModel } from '../src/model/init-model.js';
import { isPresetName } from '../src/model/presets.js';
import { generatePet } from '../src/pet/init-pet.js';
import { TaskRegistry } from '../src/pet/registry.js';
import { PET_KINDS, type PetKind } from '../src/pet/types.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { benchProgress } from './lib/progress.js';
import { fmt, textTable } from './lib/report.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
};
const preset = flag('--model', 'bert-mini');
if (!isPresetName(preset)) throw new Error(`--model must be a preset name, got ${preset}`);
const taskCount = Number(flag('--tasks', '64'));
const reps = Number(flag('--reps', '3'));
const kinds = flag('--kinds', PET_KINDS.join(',')).split(',') as PetKind[];
for (const k of kinds) if (!PET_KINDS.includes(k)) throw new Error(`unknown kind ${k}`);

const root = await mkdtemp(join(tmpdir(), 'petserve-profile-'));
const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
try {
  await initModel({ preset, outDir: root, numLabels: 2, seed: 1 });
  const base = await loadCheckpoint(root);
  const registry = new TaskRegistry(base, { logger: silentLogger });
  const rng = new Rng(7);
  const rows: TaskRow[] = [];
  for (let i = 0; i < taskCount; i++) {
    registry.registerBundle(`t${i}`, generatePet({ model: base, kind: kinds[i % kinds.length]!, seed: 1000 + i }));
    for (let r = 0; r < 2; r++) rows.push({ task: `t${i}`, inputIds: Array.from({ length: 16 }, () => rng.int(0, base.config.vocabSize)) });
  }
  const runner = await ModelRunner.create(ctx, base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 256 << 20 });
  const sets = { pets: rows, base: rows.map((r) => ({ ...r, task: null })) };
  const perOp = { pets: new Map<string, number>(), base: new Map<string, number>() };
  for (const rs of Object.values(sets)) await runner.runTasks(rs, { logits: true });
  const progress = benchProgress('profile-ops', 2 * reps, 'profiled runs');
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const name of ['pets', 'base'] as const) {
        const r = await runner.runTasks(sets[name], { logits: true }, { profile: 'dispatches' });
        for (const p of r.phases ?? []) {
          const op = p.name.replace(/^l\d+\./, '');
          perOp[name].set(op, (perOp[name].get(op) ?? 0) + p.ms / reps);
        }
        progress.increment();
      }
    }
  } finally {
    progress.stop();
  }
  await runner.dispose();
  const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
  const ops = [...new Set([...perOp.pets.keys(), ...perOp.base.keys()])].sort(
    (a, b) => (perOp.pets.get(b) ?? 0) - (perOp.pets.get(a) ?? 0),
  );
  const baseTotal = total(perOp.base);
  console.log(
    textTable({
      title: `Device ms per op (all layers), ${taskCount} tasks of ${kinds.join('/')} x 2 rows x 16 tokens, ${preset}, ${ctx.capabilities.adapterName}; mean of ${reps}`,
      headers: ['op', 'base ms', 'PET batch ms', 'share of base total'],
      rows: [
        ...ops.map((op) => [op, fmt(perOp.base.get(op) ?? 0, 1), fmt(perOp.pets.get(op) ?? 0, 1), `${fmt(((perOp.pets.get(op) ?? 0) / baseTotal) * 100, 1)} %`]),
        ['total', fmt(baseTotal, 1), fmt(total(perOp.pets), 1), `${fmt((total(perOp.pets) / baseTotal) * 100, 1)} %`],
      ],
    }),
  );
} finally {
  ctx.destroy();
  await rm(root, { recursive: true, force: true });
}
