/**
 * Scheduler experiments (issue 4), each a side-by-side run on one device:
 *
 *   npm run bench -- tasks      tasks sweep: SeqS vs FIFO vs PetS-style vs ours, + GPU memory
 *   npm run bench -- lengths    length variance: fixed batching vs coordinated
 *   npm run bench -- latency    open loop: Poisson arrivals, p50/p99 and SLO attainment
 *   npm run bench -- operators  operator scheduler on vs off per PET mix (timestamps)
 *
 * Flags: --model bert-mini (preset), --requests N, --quick, --out bench/results.
 * Each writes sched-<experiment>-<adapter>-<stamp>.{json,md,svg}.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isPresetName, type PresetName } from '../src/model/presets.js';
import { generatePet } from '../src/pet/init-pet.js';
import { TaskRegistry } from '../src/pet/registry.js';
import type { PetKind } from '../src/pet/types.js';
import { scheduleOperators } from '../src/scheduler/operator-scheduler.js';
import { ModelRunner, type TaskRow } from '../src/engine/model-runner.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { benchArgs, flag } from './lib/args.js';
import { lognormalLengths, normalLengths } from './lib/lengths.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';
import {
  createHarness,
  makeWorkload,
  paddedEngine,
  percentile,
  runClosed,
  runOpenLoop,
  runSeqS,
  schedulerConfig,
  type Harness,
  type RunStats,
} from './lib/serving-harness.js';
import { barChartSvg, lineChartSvg } from './lib/svg-chart.js';

const experiment = benchArgs.find((a) => !a.startsWith('--') && !/^\d/.test(a)) ?? '';
const quick = benchArgs.includes('--quick');
const presetArg = flag('--model') ?? 'bert-mini';
if (!isPresetName(presetArg)) throw new Error(`--model must be a preset name, got ${presetArg}`);
const preset: PresetName = presetArg;
const outDir = flag('--out') ?? 'bench/results';
const MAX_TOKENS = 4096;
const MAX_ROWS = 128;
/** Fixed batch size of the FIFO and SeqS baselines (rows). */
const FIXED_ROWS = Number(flag('--fixed-rows') ?? 32);

const tps = (r: RunStats): number => (r.tokens * 1000) / r.ms;
const MiB = 1024 * 1024;

interface Report {
  title: string;
  table: Table;
  json: unknown;
  svg: string;
  notes: string[];
}

async function save(name: string, h: Harness, r: Report): Promise<void> {
  const adapter = h.ctx.capabilities.adapterName;
  const stem = `sched-${name}-${adapterSlug(adapter)}-${fileStamp(new Date())}`;
  const cmd = commandLine();
  const md = [
    `# ${r.title}`,
    '',
    `- adapter: ${adapter}; model: ${preset}; machine: ${machineInfo().cpuModel} (${machineInfo().cpuCores} cores)`,
    `- command: \`${cmd.npm ?? cmd.node}\``,
    ...r.notes.map((n) => `- ${n}`),
    '',
    markdownTable(r.table),
    '',
    `![chart](${stem}.svg)`,
  ].join('\n');
  await writeReport(outDir, stem, { experiment: name, adapter, model: preset, machine: machineInfo(), command: cmd, ...(r.json as object) }, md);
  await writeFile(join(outDir, `${stem}.svg`), r.svg);
  console.log(textTable(r.table));
  console.log(`wrote ${join(outDir, stem)}.{json,md,svg}`);
}

/** 1. Tasks sweep: throughput of the four systems and GPU memory of SeqS vs ours. */
async function tasksSweep(h: Harness): Promise<Report> {
  const counts = quick ? [1, 16, 64] : [1, 4, 16, 64, 256];
  const requests = Number(flag('--requests') ?? (quick ? 128 : 256));
  const vocab = h.base.config.vocabSize;
  const rows: string[][] = [];
  const json: unknown[] = [];
  const series = { seqs: [] as number[], fifo: [] as number[], pets: [] as number[], ours: [] as number[] };
  for (const n of counts) {
    h.ensureTasks(n);
    const tasks = h.taskIds.slice(0, n);
    const rng = new Rng(100 + n);
    const w = makeWorkload(rng, tasks, normalLengths(rng, requests, 32, 8, 128), vocab);
    // Page every task in once so all systems start from resident PETs.
    await runClosed(h.runner, h.cost, schedulerConfig({}), w);
    const fifo = await runClosed(paddedEngine(h.runner), h.cost, schedulerConfig({ policy: 'fifo', maxBatchRows: FIXED_ROWS, operatorScheduler: false }), w);
    const pets = await runClosed(h.runner, h.cost, schedulerConfig({ policy: 'pets', operatorScheduler: false }), w);
    const ours = await runClosed(h.runner, h.cost, schedulerConfig({ policy: 'slo' }), w);
    const seqs = await runSeqS(h, w, FIXED_ROWS);
    const mem = h.runner.memory();
    const oursBytes = mem.baseModelBytes + (mem.pool?.usedBytes ?? 0) + mem.activationArenaBytes;
    const seqsBytes = n * seqs.copyBytes;
    series.seqs.push(tps(seqs));
    series.fifo.push(tps(fifo));
    series.pets.push(tps(pets));
    series.ours.push(tps(ours));
    rows.push([
      String(n),
      fmt(tps(seqs), 0),
      fmt(tps(fifo), 0),
      fmt(tps(pets), 0),
      fmt(tps(ours), 0),
      `${fmt(tps(ours) / tps(seqs), 2)}x`,
      `${fmt(tps(ours) / tps(fifo), 2)}x`,
      fmt(seqsBytes / MiB, 0),
      fmt(oursBytes / MiB, 0),
    ]);
    json.push({
      tasks: n,
      requests,
      tokens: w.tokens,
      tokensPerSec: { seqs: round(tps(seqs)), fifo: round(tps(fifo)), pets: round(tps(pets)), ours: round(tps(ours)) },
      batches: { seqs: seqs.batches.length, fifo: fifo.batches.length, pets: pets.batches.length, ours: ours.batches.length },
      gpuBytes: { seqs: seqsBytes, ours: oursBytes, seqsPerCopy: seqs.copyBytes },
    });
  }
  return {
    title: `Tasks sweep: throughput (tokens/s) of SeqS, fixed FIFO, PetS-style and ours`,
    table: {
      title: 'tasks sweep',
      headers: ['tasks', 'SeqS tok/s', 'FIFO tok/s', 'PetS-style tok/s', 'ours tok/s', 'ours/SeqS', 'ours/FIFO', 'SeqS MiB', 'ours MiB'],
      rows,
    },
    json: { fixedRows: FIXED_ROWS, maxBatchTokens: MAX_TOKENS, maxBatchRows: MAX_ROWS, points: json },
    svg: barChartSvg({
      title: `Throughput vs number of tasks (${preset})`,
      xLabel: 'tasks',
      yLabel: 'tokens / s',
      categories: counts.map(String),
      series: [
        { name: 'SeqS', values: series.seqs },
        { name: 'FIFO (fixed, padded)', values: series.fifo },
        { name: 'PetS-style DP', values: series.pets },
        { name: 'ours', values: series.ours },
      ],
    }),
    notes: [
      `${requests} requests per point, lengths ~ N(32, 8) clipped to 1..128, tasks drawn uniformly; PET kinds drawn uniformly per task.`,
      `SeqS: one model copy per task, its own requests only, fixed padded batches of ${FIXED_ROWS}; FIFO: arrival order across tasks, fixed padded batches of ${FIXED_ROWS}; PetS-style: length DP over the cost model, packed engine, no deadlines, operator scheduler off; ours: deadline-aware DP + operator scheduler, token budget ${MAX_TOKENS}, ≤${MAX_ROWS} rows.`,
      'SeqS copies are created one at a time and only serving is timed; its memory is N × one copy (weights + its PET).',
    ],
  };
}

/** 2. Length variance: coordinated vs fixed batching. */
async function lengthVariance(h: Harness): Promise<Report> {
  h.ensureTasks(64);
  const tasks = h.taskIds.slice(0, 64);
  const requests = Number(flag('--requests') ?? (quick ? 128 : 256));
  const mixes: { name: string; lengths: (rng: Rng) => number[] }[] = [
    ...[1, 2, 4, 8].map((sigma) => ({ name: `σ=${sigma}`, lengths: (rng: Rng) => normalLengths(rng, requests, 32, sigma, 128) })),
    { name: 'long-tail ≤512', lengths: (rng: Rng) => lognormalLengths(rng, requests, 48, 0.9, Math.min(512, h.base.config.maxPositionEmbeddings)) },
  ];
  const rows: string[][] = [];
  const json: unknown[] = [];
  const series = { fifo: [] as number[], fifoPacked: [] as number[], pets: [] as number[], ours: [] as number[] };
  for (const [i, mix] of mixes.entries()) {
    const rng = new Rng(500 + i);
    const w = makeWorkload(rng, tasks, mix.lengths(rng), h.base.config.vocabSize);
    await runClosed(h.runner, h.cost, schedulerConfig({}), w);
    const fifo = await runClosed(paddedEngine(h.runner), h.cost, schedulerConfig({ policy: 'fifo', maxBatchRows: FIXED_ROWS, operatorScheduler: false }), w);
    const fifoPacked = await runClosed(h.runner, h.cost, schedulerConfig({ policy: 'fifo', maxBatchRows: FIXED_ROWS, operatorScheduler: false }), w);
    const pets = await runClosed(h.runner, h.cost, schedulerConfig({ policy: 'pets', operatorScheduler: false }), w);
    const ours = await runClosed(h.runner, h.cost, schedulerConfig({ policy: 'slo' }), w);
    for (const [k, r] of [['fifo', fifo], ['fifoPacked', fifoPacked], ['pets', pets], ['ours', ours]] as const) series[k].push(tps(r));
    rows.push([mix.name, fmt(tps(fifo), 0), fmt(tps(fifoPacked), 0), fmt(tps(pets), 0), fmt(tps(ours), 0), `${fmt(tps(ours) / tps(fifo), 2)}x`, `${fmt(tps(ours) / tps(fifoPacked), 2)}x`]);
    json.push({ mix: mix.name, tokens: w.tokens, tokensPerSec: { fifo: round(tps(fifo)), fifoPacked: round(tps(fifoPacked)), pets: round(tps(pets)), ours: round(tps(ours)) } });
  }
  return {
    title: 'Length variance: fixed batching vs coordinated batching (64 tasks)',
    table: {
      title: 'length variance',
      headers: ['lengths', 'FIFO padded tok/s', 'FIFO packed tok/s', 'PetS-style tok/s', 'ours tok/s', 'ours/FIFO padded', 'ours/FIFO packed'],
      rows,
    },
    json: { requests, fixedRows: FIXED_ROWS, points: json },
    svg: barChartSvg({
      title: `Throughput by length spread (${preset}, 64 tasks)`,
      xLabel: 'length distribution',
      yLabel: 'tokens / s',
      categories: mixes.map((m) => m.name),
      series: [
        { name: 'FIFO padded', values: series.fifo },
        { name: 'FIFO packed', values: series.fifoPacked },
        { name: 'PetS-style DP', values: series.pets },
        { name: 'ours', values: series.ours },
      ],
    }),
    notes: [
      `${requests} requests per mix over 64 tasks; σ mixes: N(32, σ) clipped to 1..128 (PetS's setup); long tail: lognormal(median 48, σ 0.9) clipped to 512.`,
      `FIFO padded: arrival order, fixed ${FIXED_ROWS} rows, every row padded to the batch's longest (what fixed batching costs); FIFO packed: same batches on the packed engine.`,
    ],
  };
}

/** 3. Open loop: Poisson arrivals at fractions of measured max throughput. */
async function openLoop(h: Harness): Promise<Report> {
  h.ensureTasks(64);
  const tasks = h.taskIds.slice(0, 64);
  const durationS = Number(flag('--seconds') ?? (quick ? 8 : 15));
  const rngW = new Rng(900);
  const probe = makeWorkload(rngW, tasks, normalLengths(rngW, 256, 32, 8, 128), h.base.config.vocabSize);
  await runClosed(h.runner, h.cost, schedulerConfig({}), probe);
  const max = await runClosed(h.runner, h.cost, schedulerConfig({}), probe);
  const maxRps = (max.requests * 1000) / max.ms;
  // SLO: a few full-batch times, so that it is meetable at moderate load and not trivially at any.
  const sloMs = Number(flag('--slo-ms') ?? Math.round(Math.max(250, 3 * h.cost.estimateMs({ rows: 32, tokens: 1024, sumSqLen: 32 * 32 * 32, kindTokens: {}, distinctTasks: 16 }))));
  const loads = quick ? [0.3, 0.7, 1.0] : [0.1, 0.3, 0.5, 0.7, 0.9, 1.0];
  const systems = [
    { name: 'FIFO', engine: h.runner, cfg: schedulerConfig({ policy: 'fifo', maxBatchRows: FIXED_ROWS, operatorScheduler: false, defaultSloMs: sloMs }) },
    { name: 'PetS-style', engine: h.runner, cfg: schedulerConfig({ policy: 'pets', operatorScheduler: false, defaultSloMs: sloMs }) },
    { name: 'ours', engine: h.runner, cfg: schedulerConfig({ policy: 'slo', defaultSloMs: sloMs, maxWaitMs: sloMs }) },
  ];
  const rows: string[][] = [];
  const json: unknown[] = [];
  const attain = new Map<string, [number, number][]>(systems.map((s) => [s.name, []]));
  const p99s = new Map<string, [number, number][]>(systems.map((s) => [s.name, []]));
  for (const load of loads) {
    const rate = load * maxRps;
    const count = Math.max(20, Math.round(rate * durationS));
    const rng = new Rng(Math.round(load * 1000));
    const w = makeWorkload(rng, tasks, normalLengths(rng, count, 32, 8, 128), h.base.config.vocabSize);
    for (const s of systems) {
      const r = await runOpenLoop(s.engine, h.cost, s.cfg, w, rate, new Rng(7));
      const p50 = percentile(r.latenciesMs, 50);
      const p99 = percentile(r.latenciesMs, 99);
      const slo = r.sloMet / r.total;
      attain.get(s.name)!.push([load * 100, slo * 100]);
      p99s.get(s.name)!.push([load * 100, Number.isFinite(p99) ? p99 : sloMs * 4]);
      rows.push([`${Math.round(load * 100)} %`, s.name, fmt(p50, 0), Number.isFinite(p99) ? fmt(p99, 0) : 'expired', `${fmt(slo * 100, 1)} %`, String(r.expired), fmt(r.batches.length ? r.batches.reduce((a, b) => a + b.rows, 0) / r.batches.length : 0, 1)]);
      json.push({ load, system: s.name, requests: r.total, p50Ms: round(p50), p99Ms: Number.isFinite(p99) ? round(p99) : null, sloAttainment: round(slo), expired: r.expired, batches: r.batches.length });
    }
  }
  return {
    title: `Open-loop latency over 64 tasks: SLO ${sloMs} ms`,
    table: { title: 'open loop', headers: ['load', 'system', 'p50 ms', 'p99 ms', 'SLO met', 'expired', 'rows/batch'], rows },
    json: { maxRequestsPerSec: round(maxRps), sloMs, durationS, points: json },
    svg: lineChartSvg({
      title: `SLO attainment vs load (SLO ${sloMs} ms, ${preset})`,
      xLabel: 'offered load, % of measured max throughput',
      yLabel: 'SLO attainment %',
      series: [...attain].map(([name, points]) => ({ name, points })),
    }),
    notes: [
      `Max throughput measured first (closed loop, ours): ${fmt(maxRps, 1)} requests/s; each load point offers Poisson arrivals for ${durationS} s; lengths N(32, 8).`,
      'Every system drops a request whose deadline passed before it ran (counted as a miss, latency ∞ in p99).',
      'FIFO: fixed batches of 32 rows on the packed engine; PetS-style: length DP snapshot, no deadlines; ours: deadline-aware DP, batch time capped by the SLO, operator scheduler on.',
    ],
  };
}

/** 4. Operator scheduler on vs off per PET mix: device time from timestamp queries and wall time. */
async function operatorAblation(h: Harness): Promise<Report> {
  const reps = quick ? 3 : 7;
  const registry = new TaskRegistry(h.base, { logger: silentLogger });
  const mixes: { name: string; kinds: PetKind[]; sites?: string[] }[] = [
    { name: 'LoRA q,v', kinds: ['lora'], sites: ['query', 'value'] },
    { name: 'LoRA all', kinds: ['lora'] },
    { name: 'diff + mask', kinds: ['diff', 'mask'] },
    { name: 'LoRA q,v + mask', kinds: ['lora', 'mask'], sites: ['query', 'value'] },
    { name: 'BitFit + IA3', kinds: ['bitfit', 'ia3'] },
    { name: 'all kinds', kinds: ['lora', 'adapter', 'diff', 'mask', 'bitfit', 'ia3'] },
  ];
  let id = 0;
  const mixTasks = new Map<string, string[]>();
  for (const m of mixes) {
    const ids: string[] = [];
    for (let i = 0; i < 16; i++) {
      const kind = m.kinds[i % m.kinds.length]!;
      const b = generatePet({ model: h.base, kind, seed: 5000 + id });
      if (m.sites && (b.pet.kind === 'lora' || b.pet.kind === 'diff')) {
        const s = b.pet.sites as { site: string }[];
        s.splice(0, Infinity, ...s.filter((x) => m.sites!.includes(x.site)));
      }
      registry.registerBundle(`op${id}`, b);
      ids.push(`op${id++}`);
    }
    mixTasks.set(m.name, ids);
  }
  const runner = await ModelRunner.create(h.ctx, h.base, { dtype: 'f32', logger: silentLogger, registry, poolBytes: 512 << 20 });
  const rows: string[][] = [];
  const json: unknown[] = [];
  const on: number[] = [];
  const off: number[] = [];
  try {
    for (const m of mixes) {
      const rng = new Rng(77);
      const batch: TaskRow[] = Array.from({ length: 64 }, (_, i) => ({
        task: mixTasks.get(m.name)![i % 16]!,
        inputIds: Array.from({ length: 32 }, () => rng.int(1000, h.base.config.vocabSize)),
      }));
      const dev = { on: [] as number[], off: [] as number[] };
      const wall = { on: [] as number[], off: [] as number[] };
      const runOnce = async (which: 'on' | 'off'): Promise<void> => {
        const t0 = performance.now();
        const r = await runner.runTasks(batch, { logits: true }, { profile: true, operators: which === 'on' ? scheduleOperators : undefined });
        wall[which].push(performance.now() - t0);
        dev[which].push((r.phases ?? []).reduce((a, p) => a + p.ms, 0));
      };
      await runOnce('on');
      await runOnce('off');
      dev.on.length = dev.off.length = wall.on.length = wall.off.length = 0;
      // Alternate so machine noise hits both sides alike.
      for (let r = 0; r < reps; r++) {
        await runOnce(r % 2 ? 'on' : 'off');
        await runOnce(r % 2 ? 'off' : 'on');
      }
      const md = (xs: number[]): number => percentile(xs, 50);
      on.push(md(dev.on));
      off.push(md(dev.off));
      rows.push([m.name, fmt(md(dev.off), 1), fmt(md(dev.on), 1), `${fmt(md(dev.off) / md(dev.on), 3)}x`, fmt(md(wall.off), 1), fmt(md(wall.on), 1)]);
      json.push({ mix: m.name, deviceMs: { off: round(md(dev.off)), on: round(md(dev.on)) }, wallMs: { off: round(md(wall.off)), on: round(md(wall.on)) }, reps });
    }
  } finally {
    await runner.dispose();
  }
  return {
    title: 'Operator scheduler on vs off (64 rows × 32 tokens over 16 tasks per mix)',
    table: { title: 'operator scheduler', headers: ['PET mix', 'device ms off', 'device ms on', 'off/on', 'wall ms off', 'wall ms on'], rows },
    json: { reps, points: json },
    svg: barChartSvg({
      title: `Device time per batch, operator scheduler off vs on (${preset})`,
      xLabel: 'PET mix',
      yLabel: 'device ms (timestamp queries)',
      categories: mixes.map((m) => m.name),
      series: [
        { name: 'off', values: off },
        { name: 'on', values: on },
      ],
    }),
    notes: [
      `Median of ${reps} alternating runs per side; device time = sum of per-layer timestamp phases.`,
      'off: every site task-aware, sparse deltas after the LoRA chain; on: plain kernels where no row has work, sparse recorded between shrink and expand.',
    ],
  };
}

const experiments: Record<string, (h: Harness) => Promise<Report>> = {
  tasks: tasksSweep,
  lengths: lengthVariance,
  latency: openLoop,
  operators: operatorAblation,
};

export async function runSchedulerExperiment(name: string): Promise<void> {
  const run = experiments[name];
  if (!run) throw new Error(`unknown scheduler experiment '${name}'; one of ${Object.keys(experiments).join(', ')}`);
  const h = await createHarness({ preset, maxBatchTokens: MAX_TOKENS });
  try {
    await save(name, h, await run(h));
  } finally {
    await h.close();
  }
}

if (process.argv[1]?.endsWith('scheduler.ts')) await runSchedulerExperiment(experiment);
