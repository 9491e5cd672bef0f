/**
 * PET benchmark (issue 3): memory per task vs a full model copy, PET overhead
 * of a mixed 64-task batch vs the same tokens on the base model, and segmented
 * dispatch vs one dispatch per task. All timings side by side in one run.
 *
 *   npm run bench:pets [-- --model bert-mini] [--quick] [--out bench/results]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner, type TaskRow } from '../src/engine/model-runner.js';
import { GpuContext } from '../src/gpu/context.js';
import { loadCheckpoint, type BertCheckpoint } from '../src/model/checkpoint.js';
import { initModel } from '../src/model/init-model.js';
import { isPresetName, type PresetName } from '../src/model/presets.js';
import { generatePet } from '../src/pet/init-pet.js';
import { packPet } from '../src/pet/pack.js';
import { TaskRegistry } from '../src/pet/registry.js';
import { PET_KINDS, petHostBytes, type PetKind } from '../src/pet/types.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import type { Progress } from '../src/cli/progress.js';
import { benchProgress, checkpointProgress } from './lib/progress.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const modelPresetArg = flag('--model') ?? 'bert-mini';
const outDir = flag('--out') ?? 'bench/results';
if (!isPresetName(modelPresetArg)) throw new Error(`--model must be a preset name, got ${modelPresetArg}`);
const modelPreset: PresetName = modelPresetArg;

const GiB = 1024 ** 3;
/** Section headings are progress, not results: stderr. */
const progressNote = (msg: string): void => void process.stderr.write(`${msg}\n`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function makeBase(preset: PresetName, dir: string): Promise<BertCheckpoint> {
  const progress = checkpointProgress(preset);
  try {
    await initModel({ preset, outDir: dir, numLabels: 2, seed: 1, onProgress: (phase, done, total) => progress.report(phase, done, total) });
  } finally {
    progress.stop();
  }
  return loadCheckpoint(dir);
}

/** A: bytes per task on bert-base shapes (no GPU needed). */
function memoryTable(base: BertCheckpoint): { table: Table; json: unknown } {
  const params = base.weights;
  let modelFloats = params.wordEmbeddings.length + params.positionEmbeddings.length + params.tokenTypeEmbeddings.length;
  for (const l of params.layers) {
    for (const lin of [l.query, l.key, l.value, l.attentionOutput, l.intermediate, l.output]) modelFloats += lin.weight.length + lin.bias.length;
    modelFloats += 4 * l.attentionLayerNorm.gamma.length;
  }
  modelFloats += params.pooler.weight.length + params.pooler.bias.length + (params.classifier?.weight.length ?? 0);
  const rows: string[][] = [];
  const json: Record<string, unknown>[] = [];
  const gpuBytes = (floats: number, words: number, e: number): number => Math.ceil((floats * e) / 4) * 4 + words * 4;
  let sumF32 = 0;
  let sumF16 = 0;
  for (const [i, kind] of PET_KINDS.entries()) {
    const bundle = generatePet({ model: base, kind, seed: 10 + i });
    const packed = packPet(bundle, base);
    const host = petHostBytes(bundle);
    const g32 = gpuBytes(packed.floats.length, packed.words.length, 4);
    const g16 = gpuBytes(packed.floats.length, packed.words.length, 2);
    sumF32 += g32;
    sumF16 += g16;
    const full32 = modelFloats * 4;
    const fit32 = Math.floor((8 * GiB - full32) / g32);
    const seqs32 = Math.floor((8 * GiB) / full32);
    rows.push([kind, fmt(host / 1e6, 2), fmt(g32 / 1e6, 2), fmt(g16 / 1e6, 2), fmt(full32 / g32, 1), String(fit32), String(seqs32), fmt(fit32 / seqs32, 0)]);
    json.push({ kind, hostBytes: host, gpuBytesF32: g32, gpuBytesF16: g16, fullModelBytesF32: full32, tasksIn8GiB: fit32, seqsModelsIn8GiB: seqs32 });
  }
  const avg32 = sumF32 / PET_KINDS.length;
  const full32 = modelFloats * 4;
  const fitAvg = Math.floor((8 * GiB - full32) / avg32);
  const seqs = Math.floor((8 * GiB) / full32);
  rows.push(['mix (avg)', '', fmt(avg32 / 1e6, 2), fmt(sumF16 / PET_KINDS.length / 1e6, 2), fmt(full32 / avg32, 1), String(fitAvg), String(seqs), fmt(fitAvg / seqs, 0)]);
  return {
    table: {
      title: `Bytes per task, ${base.config.numHiddenLayers}-layer H=${base.config.hiddenSize} shapes (init-pet defaults: LoRA r=8 on all 6 sites, adapter m=16, diff 1%, mask 10%, BitFit all biases+LN, IA³ PEFT default) vs full model ${fmt(full32 / 1e6, 1)} MB f32`,
      headers: ['kind', 'host MB', 'GPU MB f32', 'GPU MB f16', 'x smaller', 'tasks in 8 GiB', 'SeqS models in 8 GiB', 'ratio'],
      rows,
    },
    json: { modelParameters: modelFloats, perKind: json, mixAverageGpuBytesF32: avg32, tasksIn8GiB: fitAvg, seqsModelsIn8GiB: seqs },
  };
}

function rowsFor(tasks: string[], perTask: number, len: number, vocab: number, rng: Rng): TaskRow[] {
  const rows: TaskRow[] = [];
  for (const t of tasks) for (let i = 0; i < perTask; i++) rows.push({ task: t, inputIds: Array.from({ length: len }, () => rng.int(0, vocab)) });
  return rows;
}

/** Device ms (sum of timestamped phases) and wall ms of one batch. */
async function timeOnce(runner: ModelRunner, rows: TaskRow[]): Promise<{ deviceMs: number; wallMs: number }> {
  const t0 = performance.now();
  const r = await runner.runTasks(rows, { logits: true }, { profile: true });
  return { deviceMs: (r.phases ?? []).reduce((a, p) => a + p.ms, 0), wallMs: performance.now() - t0 };
}

/**
 * A vs B measured as `pairs` back-to-back pairs (A then B, order alternating),
 * after one warm-up of each. On a shared CPU device the load drifts; pairing
 * makes both sides see the same drift, and the median of per-pair ratios
 * discards the pairs a burst of other work hit.
 */
async function paired(
  a: { runner: ModelRunner; rows: TaskRow[] },
  b: { runner: ModelRunner; rows: TaskRow[] },
  pairs: number,
  progress: Progress,
): Promise<{ aMs: number[]; bMs: number[]; ratio: number; aWall: number; bWall: number }> {
  await a.runner.runTasks(a.rows, { logits: true });
  await b.runner.runTasks(b.rows, { logits: true });
  const aMs: number[] = [];
  const bMs: number[] = [];
  const aWall: number[] = [];
  const bWall: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const first = i % 2 === 0 ? a : b;
    const second = i % 2 === 0 ? b : a;
    const x = await timeOnce(first.runner, first.rows);
    const y = await timeOnce(second.runner, second.rows);
    const [ta, tb] = i % 2 === 0 ? [x, y] : [y, x];
    aMs.push(ta.deviceMs);
    bMs.push(tb.deviceMs);
    aWall.push(ta.wallMs);
    bWall.push(tb.wallMs);
    ratios.push(tb.deviceMs / ta.deviceMs);
    progress.increment();
  }
  return { aMs, bMs, ratio: median(ratios), aWall: median(aWall), bWall: median(bWall) };
}

// Module-level so that main's finally releases the line (a live line's timer would keep the process alive).
let progress: Progress | null = null;

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-bench-pets-'));
  const started = new Date();
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  try {
    progressNote('A. memory per task (bert-base shapes) ...');
    const bertBase = await makeBase('bert-base', join(root, 'bert-base'));
    const mem = memoryTable(bertBase);
    console.log(textTable(mem.table));

    progressNote(`B/C. timing on ${modelPreset}, adapter ${ctx.capabilities.adapterName} ...`);
    const base = modelPreset === 'bert-base' ? bertBase : await makeBase(modelPreset, join(root, modelPreset));
    const registry = new TaskRegistry(base, { logger: silentLogger });
    const taskCount = 64;
    const mixed: string[] = [];
    const loras: string[] = [];
    for (let i = 0; i < taskCount; i++) {
      const kind: PetKind = PET_KINDS[i % PET_KINDS.length]!;
      registry.registerBundle(`mix${i}`, generatePet({ model: base, kind, seed: 1000 + i }));
      mixed.push(`mix${i}`);
      registry.registerBundle(`lora${i}`, generatePet({ model: base, kind: 'lora', seed: 2000 + i, rank: 4 + (i % 4) * 4 }));
      loras.push(`lora${i}`);
    }
    const opts = { dtype: 'f32' as const, logger: silentLogger, registry, poolBytes: 256 << 20 };
    const runner = await ModelRunner.create(ctx, base, opts);
    const perTaskRunner = await ModelRunner.create(ctx, base, { ...opts, perTaskDispatch: true });
    const rng = new Rng(7);
    const vocab = base.config.vocabSize;

    // B: 64 tasks of all kinds, 2 rows of 16 tokens each, vs the same tokens as base rows;
    // then the same per kind (64 tasks of one kind) to show where the overhead comes from.
    const pairs = quick ? 3 : 12;
    const perKindPairs = 4;
    progress = benchProgress('pets: timing', pairs + (quick ? 0 : PET_KINDS.length * perKindPairs) + pairs, 'paired runs');
    progress.update({ done: 0, note: 'B: all kinds' });
    const petRows = rowsFor(mixed, 2, 16, vocab, rng);
    const asBase = (rows: TaskRow[]): TaskRow[] => rows.map((r) => ({ ...r, task: null }));
    const all = await paired({ runner, rows: asBase(petRows) }, { runner, rows: petRows }, pairs, progress);
    const overhead = all.ratio - 1;
    const tokens = petRows.reduce((n, r) => n + r.inputIds.length, 0);
    const perKind: { kind: PetKind; overhead: number; baseMs: number; petMs: number }[] = [];
    if (!quick) {
      for (const kind of PET_KINDS) {
        const ids: string[] = [];
        for (let i = 0; i < taskCount; i++) {
          const id = `${kind}-only-${i}`;
          registry.registerBundle(id, generatePet({ model: base, kind, seed: 3000 + i }));
          ids.push(id);
        }
        const rows = rowsFor(ids, 2, 16, vocab, rng);
        progress.update({ note: `B: ${kind} only` });
        const m = await paired({ runner, rows: asBase(rows) }, { runner, rows }, perKindPairs, progress);
        perKind.push({ kind, overhead: m.ratio - 1, baseMs: median(m.aMs), petMs: median(m.bMs) });
        for (const id of ids) await registry.unregister(id);
      }
    }
    const overheadTable: Table = {
      title: `PET overhead: ${taskCount} tasks x 2 rows x 16 tokens = ${tokens} tokens vs the same tokens on the base model (${modelPreset}, f32; median of ${pairs} paired runs)`,
      headers: ['batch', 'base device ms', 'PET device ms', 'overhead'],
      rows: [
        ['64 tasks, all six kinds', fmt(median(all.aMs), 1), fmt(median(all.bMs), 1), `${fmt(overhead * 100, 1)} %`],
        ...perKind.map((k) => [`64 tasks, ${k.kind} only`, fmt(k.baseMs, 1), fmt(k.petMs, 1), `${fmt(k.overhead * 100, 1)} %`]),
      ],
    };

    // C: 64 LoRA tasks (ranks 4..16), segmented vs one dispatch per task.
    const loraRows = rowsFor(loras, 1, 16, vocab, rng);
    progress.update({ note: 'C: segmented vs per task' });
    const seg = await paired({ runner, rows: loraRows }, { runner: perTaskRunner, rows: loraRows }, pairs, progress);
    progress.stop();
    const segTable: Table = {
      title: `Segmented dispatch vs one dispatch per task: 64 LoRA tasks (ranks 4-16, all 6 sites), 1 row x 16 tokens each (${modelPreset}, f32; median of ${pairs} paired runs)`,
      headers: ['mode', 'device ms', 'ratio'],
      rows: [
        ['segmented (one dispatch per kind and site)', fmt(median(seg.aMs), 1), '1.00'],
        ['one dispatch per task', fmt(median(seg.bMs), 1), fmt(seg.ratio, 2)],
      ],
    };
    // Tables after the progress line is gone: both share the terminal.
    console.log(`\n${textTable(overheadTable)}\n`);
    console.log(textTable(segTable));
    await runner.dispose();
    await perTaskRunner.dispose();

    const stem = `pets-${adapterSlug(ctx.capabilities.adapterName)}-${fileStamp(started)}`;
    const cmd = commandLine();
    const md = [
      `# PET benchmark (${started.toISOString()})`,
      '',
      `Command: \`${cmd.npm ?? cmd.node}\`  `,
      `Machine: ${machineInfo().cpuModel} x${machineInfo().cpuCores}; adapter: ${ctx.capabilities.adapterName}`,
      '',
      markdownTable(mem.table),
      '',
      markdownTable(overheadTable),
      '',
      markdownTable(segTable),
    ].join('\n');
    const written = await writeReport(outDir, stem, {
      command: cmd,
      date: started.toISOString(),
      machine: machineInfo(),
      adapter: ctx.capabilities.adapterName,
      model: modelPreset,
      memory: mem.json,
      overhead: {
        tokens,
        pairs,
        deviceMsBase: all.aMs.map((x) => round(x)),
        deviceMsPets: all.bMs.map((x) => round(x)),
        overhead: round(overhead),
        perKind: perKind.map((k) => ({ ...k, overhead: round(k.overhead) })),
      },
      segmented: { deviceMsSegmented: seg.aMs.map((x) => round(x)), deviceMsPerTask: seg.bMs.map((x) => round(x)), ratio: round(seg.ratio) },
    }, md);
    console.log(`\nwrote ${written.jsonPath} and ${written.markdownPath}`);
  } finally {
    progress?.stop();
    ctx.destroy();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
