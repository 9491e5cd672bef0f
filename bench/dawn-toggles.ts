// Dawn toggles on vs off (issue 15): kernel times and end-to-end encoder
// throughput with Dawn's defaults and with robustness (and friends) turned
// off. Toggles belong to a Dawn instance, so every measurement set runs in its
// own child process (this script with --child); rounds alternate the variants
// in a rotating order so a slow minute of the shared machine does not land on
// one variant. Writes bench/results/dawn-toggles-<adapter>-<stamp>.{json,md}.
//
//   npm run bench -- toggles [--rounds 3] [--variants default,no-robustness,range-analysis,all-unsafe] [--quick] [--out DIR]

import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { resolve } from 'node:path';
import { EncoderResources } from '../src/gpu/batch-encoder.js';
import { GpuContext } from '../src/gpu/context.js';
import { describeDawnToggles, type DawnToggles } from '../src/gpu/dawn-toggles.js';
import { silentLogger } from '../src/util/logger.js';
import { benchArgs, flag, intFlag } from './lib/args.js';
import { lengthMixes, benchAttention } from './lib/attention-bench.js';
import { sampleCpu } from './lib/cpu-load.js';
import { benchEncoder } from './lib/encoder-bench.js';
import { benchGemm, gemmKernels } from './lib/gemm-bench.js';
import type { MeasureBudget } from './lib/measure.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';

/** What each variant asks Dawn for; `default` is what PetServe runs with unless configured. */
const VARIANTS: Record<string, DawnToggles> = {
  default: { enable: [], disable: [] },
  'no-robustness': { enable: ['disable_robustness'], disable: [] },
  // The safe half-way: clamps stay where the compiler cannot prove the index in range.
  'range-analysis': { enable: ['enable_integer_range_analysis_in_robustness'], disable: [] },
  // Everything that trades safety for speed at once: an upper bound on what toggles can give.
  'all-unsafe': {
    enable: ['disable_robustness', 'skip_validation', 'disable_workgroup_init', 'disable_lazy_clear_for_mapped_at_creation_buffer'],
    disable: [],
  },
};

// A child's work stays near 10 s on a quiet 2-core lavapipe (a minute when
// other jobs load it): the models' GEMM kernel on bert-base shapes at 128
// tokens, packed attention of 8 sequences around 128 tokens (it keeps its
// tiles in workgroup arrays, where the clamps sit), and one bert-mini batch.
const KERNEL_BUDGET: MeasureBudget = { targetMs: 200, maxMs: 2_000, maxReps: 200, trials: 2 };
const GEMM_KERNELS = new Set(['rb']);
const ENCODER = { preset: 'bert-mini', sequences: 4, seqLength: 128 } as const;

interface Metric {
  name: string;
  unit: string;
  better: 'higher' | 'lower';
  value: number;
  /** Share of the machine's CPU other processes used while this was measured (0..1). */
  otherCpuShare: number;
}

interface ChildReport {
  variant: string;
  toggles: string;
  adapter: string;
  metrics: Metric[];
  /** CPU time of the child (all threads, lavapipe's included), ms. */
  ownCpuMs: number;
}

const CHILD_MARK = 'DAWN_TOGGLES_RESULT ';

async function child(variant: string): Promise<void> {
  const toggles = VARIANTS[variant];
  if (!toggles) throw new Error(`unknown variant ${variant}`);
  const log = (msg: string): void => void process.stderr.write(`[toggles ${variant}] ${msg}\n`);
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'], dawnToggles: toggles }, silentLogger);
  const res = new EncoderResources(ctx);
  const metrics: Metric[] = [];
  try {
    const gemm = await benchGemm(res, {
      tokenCounts: [128],
      kernels: gemmKernels({ shaderF16: false, subgroups: false }).filter((k) => GEMM_KERNELS.has(k.name)),
      budget: KERNEL_BUDGET,
      gate: null,
      log,
    });
    for (const m of gemm.measurements) {
      metrics.push({ name: `gemm ${m.kernel} ${m.M}x${m.N}x${m.K}`, unit: 'GFLOP/s', better: 'higher', value: m.gflops, otherCpuShare: m.otherCpuShare });
    }
    const [attention] = await benchAttention(res, {
      mixes: lengthMixes(8, 42).filter((m) => m.name === 'uniform'),
      budget: KERNEL_BUDGET,
      gate: null,
      log,
    });
    if (attention) {
      metrics.push({ name: 'attention packed 8 seqs ~128', unit: 'ms', better: 'lower', value: attention.packed.ms, otherCpuShare: attention.packed.otherCpuShare });
    }
    const [encoder] = await benchEncoder(ctx, { cases: [ENCODER], dtypes: ['f32'], minWallMs: 1000, maxRuns: 3, gate: null, log });
    if (encoder) {
      const name = `encoder ${encoder.preset} ${encoder.sequences}x${encoder.seqLength}`;
      metrics.push({ name: `${name} wall`, unit: 'tokens/s', better: 'higher', value: encoder.tokensPerSecond, otherCpuShare: encoder.otherCpuShare });
      if (encoder.deviceTokensPerSecond !== null) {
        metrics.push({ name: `${name} device`, unit: 'tokens/s', better: 'higher', value: encoder.deviceTokensPerSecond, otherCpuShare: encoder.otherCpuShare });
      }
    }
  } finally {
    res.destroy();
    ctx.destroy();
  }
  const own = process.cpuUsage();
  const report: ChildReport = {
    variant,
    toggles: ctx.capabilities.dawnToggles,
    adapter: ctx.capabilities.adapterName,
    metrics,
    ownCpuMs: (own.user + own.system) / 1000,
  };
  process.stdout.write(`${CHILD_MARK}${JSON.stringify(report)}\n`);
}

interface Run {
  round: number;
  variant: string;
  wallS: number;
  /** Other processes' share of the machine's CPU over the whole child run (parent-side: machine busy − child − parent). */
  otherCpuShare: number;
  report: ChildReport;
  /** Why the child gave no report (exit status or signal); null when it did. */
  failed: string | null;
}

function runChild(variant: string, roundNo: number): Run {
  const before = sampleCpu();
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', process.argv[1]!, '--child', variant], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  const wallS = (performance.now() - t0) / 1000;
  const line = r.stdout.split('\n').find((l) => l.startsWith(CHILD_MARK));
  if (r.status !== 0 || !line) {
    // A variant that crashes (skip_validation turns a bad call into undefined behaviour) is a result too.
    process.stderr.write(`[bench] toggles: ${variant} (round ${roundNo}) failed with status ${r.status} ${r.signal ?? ''}\n`);
    const failed: ChildReport = { variant, toggles: describeDawnToggles(VARIANTS[variant]!), adapter: '', metrics: [], ownCpuMs: 0 };
    return { round: roundNo, variant, wallS, otherCpuShare: 0, report: failed, failed: `status ${r.status} ${r.signal ?? ''}`.trim() };
  }
  const report = JSON.parse(line.slice(CHILD_MARK.length)) as ChildReport;
  const after = sampleCpu();
  // sampleCpu's ownMs is the parent; the child's CPU time comes from its report.
  const total = after.machineTotalMs - before.machineTotalMs;
  const others = after.machineBusyMs - before.machineBusyMs - (after.ownMs - before.ownMs) - report.ownCpuMs;
  const share = total > 0 ? Math.min(1, Math.max(0, others / total)) : 0;
  return { round: roundNo, variant, wallS, otherCpuShare: share, report, failed: null };
}

interface Stats {
  median: number;
  min: number;
  max: number;
  /** (max − min) / median. */
  spread: number;
  values: number[];
}

function stats(values: number[]): Stats {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  const median = sorted.length % 2 === 1 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const min = sorted[0]!;
  const max = sorted[sorted.length - 1]!;
  return { median, min, max, spread: (max - min) / median, values };
}

interface Comparison {
  metric: string;
  unit: string;
  better: 'higher' | 'lower';
  variant: string;
  base: Stats;
  candidate: Stats;
  /** Relative change of the median, positive = better. */
  gain: number;
  /** The candidate's worst run beats the default's best run: a gain beyond the run-to-run spread. */
  beyondSpread: boolean;
  maxOtherCpuShare: number;
}

function compare(runs: Run[], variants: string[]): Comparison[] {
  const valuesOf = (variant: string, metric: string): { values: number[]; other: number[] } => {
    const ms = runs.filter((r) => r.variant === variant).flatMap((r) => r.report.metrics.filter((m) => m.name === metric));
    return { values: ms.map((m) => m.value), other: ms.map((m) => m.otherCpuShare) };
  };
  const first = runs.find((r) => r.variant === 'default' && r.failed === null);
  if (!first) return [];
  const out: Comparison[] = [];
  for (const m of first.report.metrics) {
    const base = valuesOf('default', m.name);
    for (const variant of variants.filter((v) => v !== 'default')) {
      const cand = valuesOf(variant, m.name);
      if (base.values.length === 0 || cand.values.length === 0) continue;
      const b = stats(base.values);
      const c = stats(cand.values);
      const higher = m.better === 'higher';
      out.push({
        metric: m.name,
        unit: m.unit,
        better: m.better,
        variant,
        base: b,
        candidate: c,
        gain: higher ? c.median / b.median - 1 : b.median / c.median - 1,
        beyondSpread: higher ? c.min > b.max : c.max < b.min,
        maxOtherCpuShare: Math.max(...base.other, ...cand.other),
      });
    }
  }
  return out;
}

const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
const range = (s: Stats, digits: number): string => `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;

function comparisonTable(rows: Comparison[], rounds: number): Table {
  return {
    title: `Dawn toggles vs Dawn's defaults: median (min–max) of ${rounds} rounds, one child process per variant and round`,
    headers: ['metric', 'unit', 'variant', 'default', 'variant value', 'default spread', 'variant spread', 'change', 'beyond spread', 'other CPU max'],
    align: ['left', 'left', 'left'],
    rows: rows.map((c) => [
      c.metric,
      c.unit,
      c.variant,
      range(c.base, 2),
      range(c.candidate, 2),
      `${(c.base.spread * 100).toFixed(1)}%`,
      `${(c.candidate.spread * 100).toFixed(1)}%`,
      pct(c.gain),
      c.beyondSpread ? 'yes' : 'no',
      `${(c.maxOtherCpuShare * 100).toFixed(0)}%`,
    ]),
    note:
      'change: of the median, positive = better (higher GFLOP/s or tokens/s, lower ms). beyond spread: every run of the ' +
      "variant beats every run with Dawn's defaults. other CPU max: the largest share of the machine's CPU other " +
      'processes used during any of the compared measurements.',
  };
}

function runsTable(runs: Run[]): Table {
  return {
    title: 'Runs in the order they ran',
    headers: ['round', 'variant', 'toggles', 'wall s', 'other CPU', 'outcome'],
    align: ['right', 'left', 'left'],
    rows: runs.map((r) => [
      String(r.round),
      r.variant,
      r.report.toggles,
      fmt(r.wallS, 1),
      r.failed === null ? `${(r.otherCpuShare * 100).toFixed(0)}%` : '-',
      r.failed === null ? 'ok' : `failed (${r.failed})`,
    ]),
  };
}

async function parent(): Promise<void> {
  const started = new Date();
  const command = commandLine();
  const machine = machineInfo();
  const loadAverageAtStart = os.loadavg();
  const quick = benchArgs.includes('--quick');
  const rounds = intFlag('--rounds', quick ? 1 : 3);
  // Robustness off is the question (issue 15); the other variants on request (--variants), each costs a child per round.
  const variants = (flag('--variants') ?? 'default,no-robustness').split(',');
  for (const v of variants) if (!VARIANTS[v]) throw new Error(`--variants: unknown variant ${v} (known: ${Object.keys(VARIANTS).join(', ')})`);
  if (!variants.includes('default')) throw new Error('--variants must include default (the baseline)');
  const outDir = resolve(flag('--out') ?? 'bench/results');

  const cpuAtStart = sampleCpu();
  const runs: Run[] = [];
  for (let roundNo = 1; roundNo <= rounds; roundNo++) {
    // Rotate the order each round: no variant always runs first (cold caches) or last.
    const order = variants.map((_, i) => variants[(i + roundNo - 1) % variants.length]!);
    for (const variant of order) {
      process.stderr.write(`[bench] toggles: round ${roundNo}/${rounds}, ${variant}\n`);
      runs.push(runChild(variant, roundNo));
    }
  }
  const finished = new Date();
  const comparisons = compare(runs, variants);
  const adapter = runs.find((r) => r.failed === null)?.report.adapter ?? 'unknown adapter';
  const cpuAtEnd = sampleCpu();
  const childrenCpuMs = runs.reduce((a, r) => a + r.report.ownCpuMs, 0);
  const machineTotalMs = cpuAtEnd.machineTotalMs - cpuAtStart.machineTotalMs;
  const machineOtherShare =
    machineTotalMs > 0
      ? Math.min(1, Math.max(0, (cpuAtEnd.machineBusyMs - cpuAtStart.machineBusyMs - (cpuAtEnd.ownMs - cpuAtStart.ownMs) - childrenCpuMs) / machineTotalMs))
      : 0;
  const header = [
    `Machine: ${machine.cpuModel}, ${machine.cpuCores} cores, ${machine.os}`,
    `Adapter: ${adapter}`,
    `Node: ${process.version}`,
    `Command: ${command.npm ?? command.node}`,
    `Date: ${started.toISOString()}`,
    `Duration: ${((finished.getTime() - started.getTime()) / 1000).toFixed(0)} s`,
    `Other processes' share of the machine's CPU over the whole run: ${(machineOtherShare * 100).toFixed(0)}% (the benchmark's own processes excluded)`,
    `Variants: ${variants.map((v) => `${v} = ${describeDawnToggles(VARIANTS[v]!)}`).join('; ')}`,
  ];
  const tables = [comparisonTable(comparisons, rounds), runsTable(runs)];
  console.log([...header, '', ...tables.map(textTable).join('\n\n').split('\n')].join('\n'));

  const report = {
    benchmark: 'dawn-toggles',
    schemaVersion: 1,
    date: started.toISOString(),
    durationS: round((finished.getTime() - started.getTime()) / 1000, 1),
    command: { ...command, rounds, variants, quick },
    otherCpuShare: round(machineOtherShare, 3),
    machine: { ...machine, loadAverage: { start: loadAverageAtStart.map((x) => round(x, 2)), end: os.loadavg().map((x) => round(x, 2)) } },
    node: process.version,
    adapter,
    gpuAdapterFilter: process.env['PETSERVE_GPU_ADAPTER'] ?? null,
    variants: Object.fromEntries(variants.map((v) => [v, VARIANTS[v]])),
    method: {
      isolation: 'one child process per variant and round (toggles belong to the Dawn instance); rounds rotate the variant order',
      kernels: `GEMM (the models' rb kernel, f32, M=128, bert-base N/K) and packed attention (8 sequences ~N(128,32)): measureRepeated, budget ${JSON.stringify(KERNEL_BUDGET)}, fastest trial, device time`,
      encoder: `${ENCODER.preset} ${ENCODER.sequences}x${ENCODER.seqLength} f32, one warm-up run, then runs until 1 s (at most 3)`,
      beyondSpread: "the variant's worst run beats the default's best run",
      otherCpu: 'per measurement from the child (machine busy − child); per run from the parent (machine busy − child − parent)',
    },
    comparisons: comparisons.map((c) => ({
      ...c,
      base: roundStats(c.base),
      candidate: roundStats(c.candidate),
      gain: round(c.gain, 4),
      maxOtherCpuShare: round(c.maxOtherCpuShare, 3),
    })),
    runs: runs.map((r) => ({
      ...r,
      wallS: round(r.wallS, 1),
      otherCpuShare: round(r.otherCpuShare, 3),
      report: { ...r.report, ownCpuMs: round(r.report.ownCpuMs, 0), metrics: r.report.metrics.map((m) => ({ ...m, value: round(m.value, 3), otherCpuShare: round(m.otherCpuShare, 3) })) },
    })),
  };
  const markdown = [
    `# Dawn toggles — ${adapter}`,
    '',
    ...header.map((line) => `- ${line.replace(/^([^:]+): /, '**$1**: ')}`),
    '',
    `Method: ${report.method.isolation}. Kernels: ${report.method.kernels}. Encoder: ${report.method.encoder}.`,
    '',
    tables.map(markdownTable).join('\n\n'),
  ].join('\n');
  const written = await writeReport(outDir, `dawn-toggles-${adapterSlug(adapter)}-${fileStamp(started)}`, report, markdown);
  console.log(`\nWrote ${written.jsonPath}\nWrote ${written.markdownPath}`);
}

function roundStats(s: Stats): Stats {
  return { median: round(s.median, 3), min: round(s.min, 3), max: round(s.max, 3), spread: round(s.spread, 4), values: s.values.map((v) => round(v, 3)) };
}

const childVariant = flag('--child');
if (childVariant !== undefined) await child(childVariant);
else await parent();
