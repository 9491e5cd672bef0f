// Kernel and encoder benchmark: GEMM variants on bert-base shapes, packed vs
// padded attention, end-to-end encoder throughput. Prints tables to stdout
// (progress to stderr) and writes bench/results/kernels-<adapter>-<stamp>.{json,md}.
//
//   npm run bench:kernels [-- --quick] [-- --out DIR]

import os from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { EncoderResources } from '../src/gpu/batch-encoder.js';
import { GpuContext } from '../src/gpu/context.js';
import { gemmChoiceName } from '../src/kernels/candidates.js';
import { defaultKernelChoices, tuning } from '../src/kernels/tuning.js';
import type { Dtype } from '../src/kernels/types.js';
import { silentLogger } from '../src/util/logger.js';
import type { Progress } from '../src/cli/progress.js';
import { benchAttention, lengthMixes, type AttentionLayoutResult, type AttentionResult } from './lib/attention-bench.js';
import { benchEncoder, type EncoderCase, type EncoderResult } from './lib/encoder-bench.js';
import { benchGemm, gemmKernels, gemmMeasurementCount, type GemmMeasurement, type GemmShapeSummary } from './lib/gemm-bench.js';
import { QuietGate, type QuietPolicy } from './lib/cpu-load.js';
import type { MeasureBudget } from './lib/measure.js';
import { benchProgress } from './lib/progress.js';
import {
  adapterSlug,
  commandLine,
  fileStamp,
  fmt,
  machineInfo,
  markdownTable,
  round,
  textTable,
  writeReport,
  type Table,
} from './lib/report.js';

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results' },
  },
  strict: true,
});
const quick = flags.quick === true;
const outDir = resolve(flags.out ?? 'bench/results');

// Each timed submit lasts >= ~0.5 s of device time so timer resolution and
// launch jitter vanish, but a measurement (warm-up and trials) stays within
// ~15 s: the naive 2048x3072x768 GEMM runs with R = 1 on lavapipe. Two
// trials, best kept, because this CPU device is shared with other processes.
const KERNEL_BUDGET: MeasureBudget = { targetMs: 500, maxMs: 15_000, maxReps: 1000, trials: 2 };
// lavapipe runs kernels on the same cores as everything else: wait (bounded)
// for other processes to go quiet before each timed submit, and flag
// measurements taken while they used more than this share of the CPU.
const QUIET_POLICY: QuietPolicy = { maxOtherShare: 0.1, probeMs: 250, maxWaitMs: 30_000, totalWaitMs: 300_000 };
const LOADED = (share: number): string => (share > QUIET_POLICY.maxOtherShare ? '*' : '');
const LOADED_NOTE = `* = other processes used more than ${QUIET_POLICY.maxOtherShare * 100}% of the CPU during the measurement.`;
const pct = (share: number): string => `${(share * 100).toFixed(0)}%`;
const GEMM_TOKEN_COUNTS = quick ? [128, 512] : [128, 512, 2048];
const ATTENTION_SEQUENCES = quick ? 16 : 64;
// bert-base at 8 x 128 keeps one forward pass under ~30 s on a 2-core lavapipe.
const ENCODER_CASES: EncoderCase[] = quick
  ? [{ preset: 'bert-mini', sequences: 32, seqLength: 128 }]
  : [
      { preset: 'bert-mini', sequences: 32, seqLength: 128 },
      { preset: 'bert-base', sequences: 8, seqLength: 128 },
    ];
const ENCODER_MIN_WALL_MS = 2000;
const ENCODER_MAX_RUNS = 5;

// One progress line over every measurement; the per-measurement messages print above it.
let progress: Progress | null = null;
const log = (msg: string): void => (progress !== null ? progress.log(`[bench] ${msg}`) : console.error(`[bench] ${msg}`));

function gemmSummaryTable(summary: GemmShapeSummary[], measurements: GemmMeasurement[], kernels: string[]): Table {
  const hasF16 = kernels.includes('rb-f16');
  const hasSgx = kernels.includes('sgx');
  const loaded = (s: GemmShapeSummary, kernel: string): string =>
    LOADED(measurements.find((m) => m.M === s.M && m.N === s.N && m.K === s.K && m.kernel === kernel)?.otherCpuShare ?? 0);
  return {
    title: 'GEMM GFLOP/s (2·M·N·K / device time), bert-base shapes',
    headers: ['M', 'N', 'K', 'layer', ...kernels, 'tiled/naive', 'rb/naive', ...(hasF16 ? ['rb f16/f32'] : []), ...(hasSgx ? ['sgx/rb'] : [])],
    align: ['right', 'right', 'right', 'left'],
    rows: summary.map((s) => [
      String(s.M),
      String(s.N),
      String(s.K),
      s.role,
      ...kernels.map((k) => fmt(s.gflops[k]) + loaded(s, k)),
      `${fmt(s.tiledOverNaive)}x`,
      `${fmt(s.rbOverNaive)}x`,
      ...(hasF16 ? [`${fmt(s.rbF16OverRb)}x`] : []),
      ...(hasSgx ? [`${fmt(s.sgxOverRb)}x`] : []),
    ]),
    note: LOADED_NOTE,
  };
}

function gemmDetailTable(measurements: GemmMeasurement[]): Table {
  return {
    title: 'GEMM measurements (per repetition; wall-clock as a cross-check)',
    headers: ['M', 'N', 'K', 'kernel', 'reps', 'device ms', 'wall ms', 'GFLOP/s', 'wall GFLOP/s', 'other CPU'],
    align: ['right', 'right', 'right', 'left'],
    rows: measurements.map((m) => [
      String(m.M),
      String(m.N),
      String(m.K),
      m.kernel,
      String(m.reps),
      fmt(m.deviceMs, 3),
      fmt(m.wallMs, 3),
      fmt(m.gflops),
      fmt(m.wallGflops),
      pct(m.otherCpuShare),
    ]),
  };
}

function attentionTable(results: AttentionResult[]): Table {
  return {
    title: `Attention, packed vs padded (bert-base: 12 heads x 64, f32)`,
    headers: [
      'mix',
      'seqs',
      'len median/max',
      'packed tokens',
      'padded tokens',
      'packed ms',
      'padded ms',
      'padded/packed',
      'score pairs padded/packed',
    ],
    rows: results.map((r) => [
      r.mix,
      String(r.lengths.count),
      `${r.lengths.median}/${r.lengths.max}`,
      String(r.packed.tokens),
      String(r.padded.tokens),
      fmt(r.packed.ms) + LOADED(r.packed.otherCpuShare),
      fmt(r.padded.ms) + LOADED(r.padded.otherCpuShare),
      `${fmt(r.paddedOverPacked)}x`,
      `${fmt(r.padded.scorePairs / r.packed.scorePairs)}x`,
    ]),
    note:
      'Padded: every sequence padded to the batch maximum; padding query rows are computed, keys past the real ' +
      'length are masked by the key count. Score pairs = (query, key) products per head each layout evaluates. ' +
      LOADED_NOTE,
  };
}

function encoderTable(results: EncoderResult[]): Table {
  return {
    title: `End-to-end encoder (random weights, logits output, GEMM '${gemmChoiceName(defaultKernelChoices.gemm)}')`,
    headers: ['model', 'dtype', 'batch', 'tokens', 'runs', 'wall ms', 'device ms', 'tokens/s', 'device tokens/s', 'other CPU'],
    rows: results.map((r) => [
      r.preset,
      r.dtype,
      `${r.sequences}x${r.seqLength}`,
      String(r.tokens),
      String(r.runs),
      fmt(r.wallMs, 1),
      fmt(r.deviceMs, 1),
      fmt(r.tokensPerSecond, 0),
      fmt(r.deviceTokensPerSecond, 0),
      pct(r.otherCpuShare),
    ]),
  };
}

function roundLayout(l: AttentionLayoutResult): AttentionLayoutResult {
  return {
    ...l,
    deviceMs: l.deviceMs !== null ? round(l.deviceMs) : null,
    wallMs: round(l.wallMs),
    ms: round(l.ms),
    otherCpuShare: round(l.otherCpuShare, 3),
    trialMs: l.trialMs.map((t) => round(t)),
  };
}

async function main(): Promise<void> {
  const started = new Date();
  const command = commandLine();
  const machine = machineInfo();
  const loadAverageAtStart = os.loadavg();
  const ctx = await GpuContext.create({ adapter: process.env.PETSERVE_GPU_ADAPTER }, silentLogger);
  const res = new EncoderResources(ctx);
  const caps = ctx.capabilities;
  const gate = new QuietGate(QUIET_POLICY, log);
  try {
    log(`adapter: ${caps.adapterName} (shader-f16 ${caps.shaderF16}, timestamp-query ${caps.timestampQuery})`);
    if (!caps.timestampQuery) log('no timestamp-query: kernel timings fall back to wall-clock');

    const kernels = gemmKernels(caps);
    const mixes = lengthMixes(ATTENTION_SEQUENCES, 42);
    const dtypes: Dtype[] = caps.shaderF16 ? ['f32', 'f16'] : ['f32'];
    progress = benchProgress('kernels', gemmMeasurementCount(GEMM_TOKEN_COUNTS, kernels) + 2 * mixes.length + ENCODER_CASES.length * dtypes.length, 'measurements');
    const onMeasured = (): void => progress?.increment();
    const gemmResults = await benchGemm(res, {
      tokenCounts: GEMM_TOKEN_COUNTS,
      kernels,
      budget: KERNEL_BUDGET,
      gate,
      log,
      onMeasured,
    });
    const attentionResults = await benchAttention(res, {
      mixes,
      budget: KERNEL_BUDGET,
      gate,
      log,
      onMeasured,
    });
    const encoderResults = await benchEncoder(ctx, {
      cases: ENCODER_CASES,
      dtypes,
      minWallMs: ENCODER_MIN_WALL_MS,
      maxRuns: ENCODER_MAX_RUNS,
      gate,
      log,
      onMeasured,
    });
    progress.stop();
    progress = null;
    const finished = new Date();

    const tables = [
      gemmSummaryTable(gemmResults.summary, gemmResults.measurements, kernels.map((k) => k.name)),
      attentionTable(attentionResults),
      encoderTable(encoderResults),
      gemmDetailTable(gemmResults.measurements),
    ];
    const header = [
      `Machine: ${machine.cpuModel}, ${machine.cpuCores} cores, ${machine.os}`,
      `Adapter: ${caps.adapterName} (shader-f16 ${caps.shaderF16}, timestamp-query ${caps.timestampQuery})`,
      `Node: ${process.version}`,
      `Command: ${command.npm ?? command.node}`,
      `Date: ${started.toISOString()}`,
      `Waited for a quiet CPU: ${(gate.waitedMs / 1000).toFixed(1)} s`,
    ];
    console.log([...header, '', ...tables.map(textTable).join('\n\n').split('\n')].join('\n'));

    const report = {
      benchmark: 'kernels',
      schemaVersion: 1,
      date: started.toISOString(),
      durationS: round((finished.getTime() - started.getTime()) / 1000, 1),
      command: { ...command, quick },
      machine: {
        ...machine,
        // 1/5/15-minute load: a busy machine (other processes on the CPU device) shows here.
        loadAverage: { start: loadAverageAtStart.map((x) => round(x, 2)), end: os.loadavg().map((x) => round(x, 2)) },
      },
      node: process.version,
      adapter: caps,
      gpuAdapterFilter: process.env.PETSERVE_GPU_ADAPTER ?? null,
      method: {
        kernelTiming:
          'one untimed warm-up submit (compiles the pipeline); then R repetitions of the same dispatch(es) in ONE ' +
          'timestamp-profiled phase, one submit; per-repetition time = phase ms / R. R aims at >= targetMs of work ' +
          '(R = 1 for the slowest kernels); the timed submit is repeated up to `trials` times while warm-up + trials ' +
          'stay within maxMs, and the fastest trial is kept (all are in trialMs).',
        budget: KERNEL_BUDGET,
        quiet: {
          ...QUIET_POLICY,
          rule: 'before each timed submit, wait until other processes use <= maxOtherShare of the CPU (bounded)',
          waitedS: round(gate.waitedMs / 1000, 1),
        },
        gflops: '2·M·N·K / per-repetition device time (wall-clock where timestamps are unavailable)',
        encoder:
          `one warm-up run of the batch, then timed runs until ${ENCODER_MIN_WALL_MS} ms of wall-clock ` +
          `(at most ${ENCODER_MAX_RUNS}); deviceMs = sum of profiled phases`,
      },
      gemm: {
        tokenCounts: GEMM_TOKEN_COUNTS,
        kernels,
        modelDefaultVariant: gemmChoiceName(defaultKernelChoices.gemm),
        tuning,
        defaultKernelChoices,
        summary: gemmResults.summary.map((s) => ({
          ...s,
          gflops: Object.fromEntries(Object.entries(s.gflops).map(([k, v]) => [k, round(v, 3)])),
          tiledOverNaive: round(s.tiledOverNaive, 3),
          rbOverNaive: round(s.rbOverNaive, 3),
          rbF16OverRb: s.rbF16OverRb !== null ? round(s.rbF16OverRb, 3) : null,
          sgxOverRb: s.sgxOverRb !== null ? round(s.sgxOverRb, 3) : null,
        })),
        measurements: gemmResults.measurements.map((m) => ({
          ...m,
          deviceMs: m.deviceMs !== null ? round(m.deviceMs) : null,
          wallMs: round(m.wallMs),
          gflops: round(m.gflops, 3),
          wallGflops: round(m.wallGflops, 3),
          otherCpuShare: round(m.otherCpuShare, 3),
          trialMs: m.trialMs.map((t) => round(t)),
        })),
      },
      attention: attentionResults.map((r) => ({
        ...r,
        lengths: { ...r.lengths, mean: round(r.lengths.mean, 2) },
        packed: roundLayout(r.packed),
        padded: roundLayout(r.padded),
        paddedOverPacked: round(r.paddedOverPacked, 3),
        scorePairsPaddedOverPacked: round(r.padded.scorePairs / r.packed.scorePairs, 3),
      })),
      encoder: encoderResults.map((r) => ({
        ...r,
        wallMs: round(r.wallMs, 2),
        deviceMs: r.deviceMs !== null ? round(r.deviceMs, 2) : null,
        tokensPerSecond: round(r.tokensPerSecond, 1),
        otherCpuShare: round(r.otherCpuShare, 3),
        deviceTokensPerSecond: r.deviceTokensPerSecond !== null ? round(r.deviceTokensPerSecond, 1) : null,
      })),
    };
    const markdown = [
      `# PetServe kernel benchmark — ${caps.adapterName}`,
      '',
      ...header.map((line) => `- ${line.replace(/^([^:]+): /, '**$1**: ')}`),
      `- **Duration**: ${report.durationS} s${quick ? ' (quick sweep)' : ''}`,
      '',
      `Kernel timing: ${report.method.kernelTiming}`,
      '',
      tables.map(markdownTable).join('\n\n'),
    ].join('\n');
    const stem = `kernels-${adapterSlug(caps.adapterName)}-${fileStamp(started)}`;
    const written = await writeReport(outDir, stem, report, markdown);
    console.log(`\nWrote ${written.jsonPath}\nWrote ${written.markdownPath}`);
  } finally {
    progress?.stop();
    res.destroy();
    ctx.destroy();
  }
}

await main();
