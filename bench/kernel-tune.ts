/**
 * The kernel self-tuner, before and after, in one run: for each preset and dtype it runs the tuner as a
 * server would (src/kernels/tuner/, trials through the runner's queue), prints every candidate's time,
 * then measures end-to-end encoder tokens/s with the default kernels and with the pick, alternating
 * (default, tuned, default, tuned, ...) so a busy machine slows both alike. Median over rounds.
 *
 *   npm run bench -- tune [--presets bert-mini,bert-base] [--dtypes f32] [--rounds 5] [--batch 8x128] [--out DIR]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner } from '../src/engine/model-runner.js';
import { GpuContext } from '../src/gpu/context.js';
import { attentionChoiceName, choiceNames, gemmChoiceName } from '../src/kernels/candidates.js';
import { tuneKernels, type TuneOutcome } from '../src/kernels/tuner/kernel-tuner.js';
import { defaultKernelChoices } from '../src/kernels/tuning.js';
import type { Dtype, KernelChoices } from '../src/kernels/types.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { initModel } from '../src/model/init-model.js';
import type { PresetName } from '../src/model/presets.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { otherCpuShare, sampleCpu } from './lib/cpu-load.js';
import { adapterSlug, commandLine, fileStamp, machineInfo, markdownTable, textTable, writeReport } from './lib/report.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');
const PRESETS = (args.get('presets') ?? 'bert-mini,bert-base').split(',') as PresetName[];
const DTYPES = (args.get('dtypes') ?? 'f32').split(',') as Dtype[];
const ROUNDS = Number(args.get('rounds') ?? 5);
const [BATCH, LENGTH] = (args.get('batch') ?? '8x128').split('x').map(Number) as [number, number];

const ctx = await GpuContext.create({}, silentLogger);
const adapterName = ctx.capabilities.adapterName;
const median = (x: number[]): number => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)]!;
const describe = (k: KernelChoices): string =>
  `gemm ${gemmChoiceName(k.gemm)}, attention ${attentionChoiceName(k.attention)}, rows wg${k.rowWorkgroupSize}`;

interface CaseResult {
  preset: PresetName;
  dtype: Dtype;
  tuneMs: number;
  picked: string;
  timings: TuneOutcome['timings'];
  defaultTokensPerS: number[];
  tunedTokensPerS: number[];
  defaultDeviceMs: number[];
  tunedDeviceMs: number[];
  otherCpuShare: number;
}
const results: CaseResult[] = [];

for (const preset of PRESETS) {
  const dir = await mkdtemp(join(tmpdir(), `petserve-tune-${preset}-`));
  try {
    await initModel({ preset, outDir: dir, numLabels: 2, seed: 1 });
    const checkpoint = await loadCheckpoint(dir);
    const rng = new Rng(11);
    const vocab = checkpoint.config.vocabSize;
    const inputIds = Array.from({ length: BATCH }, () => Array.from({ length: LENGTH }, () => rng.int(1000, vocab)));
    for (const dtype of DTYPES) {
      if (dtype === 'f16' && !ctx.capabilities.shaderF16) continue;
      const runner = await ModelRunner.create(ctx, checkpoint, { dtype, logger: silentLogger });
      try {
        console.log(`${preset} ${dtype}: tuning (${describe(defaultKernelChoices)} to start)`);
        const outcome = await tuneKernels(ctx, runner.tuneWorkload(), defaultKernelChoices, {
          exclusive: (w) => runner.exclusive(w),
          onProgress: (done, total) => process.stderr.write(`\r  candidate ${done}/${total}`),
        });
        process.stderr.write('\n');
        for (const t of outcome.timings) console.log(`  ${t.kernel.padEnd(9)} ${t.candidate.padEnd(14)} ${t.ms === null ? `failed: ${t.error}` : `${t.ms.toFixed(2)} ms`}`);
        console.log(`  picked: ${describe(outcome.choices)} (${(outcome.elapsedMs / 1000).toFixed(1)} s)`);
        const tokens = BATCH * LENGTH;
        const r: CaseResult = {
          preset,
          dtype,
          tuneMs: outcome.elapsedMs,
          picked: describe(outcome.choices),
          timings: outcome.timings,
          defaultTokensPerS: [],
          tunedTokensPerS: [],
          defaultDeviceMs: [],
          tunedDeviceMs: [],
          otherCpuShare: 0,
        };
        const cpu = sampleCpu();
        for (const choices of [defaultKernelChoices, outcome.choices]) {
          runner.kernels = choices;
          await runner.run({ inputIds }, { logits: true }); // compiles this set's pipelines
        }
        for (let round_ = 0; round_ < ROUNDS; round_++) {
          for (const [which, choices] of [['default', defaultKernelChoices], ['tuned', outcome.choices]] as const) {
            runner.kernels = choices;
            const t0 = performance.now();
            const { phases } = await runner.run({ inputIds }, { logits: true }, { profile: true });
            const wall = performance.now() - t0;
            const device = phases?.reduce((a, p) => a + p.ms, 0) ?? wall;
            (which === 'default' ? r.defaultTokensPerS : r.tunedTokensPerS).push(tokens / (wall / 1000));
            (which === 'default' ? r.defaultDeviceMs : r.tunedDeviceMs).push(device);
          }
        }
        r.otherCpuShare = otherCpuShare(cpu);
        results.push(r);
        console.log(
          `  end-to-end ${BATCH}x${LENGTH}: default ${median(r.defaultTokensPerS).toFixed(0)} tokens/s, tuned ${median(r.tunedTokensPerS).toFixed(0)} tokens/s ` +
            `(${(median(r.tunedTokensPerS) / median(r.defaultTokensPerS)).toFixed(2)}x), other CPU ${(r.otherCpuShare * 100).toFixed(0)} %`,
        );
      } finally {
        await runner.dispose();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const date = new Date();
const spread = (x: number[]): string => `${median(x).toFixed(0)} (${Math.min(...x).toFixed(0)}–${Math.max(...x).toFixed(0)})`;
const summary = {
  title: `End-to-end encoder, batch ${BATCH}x${LENGTH}: default kernels vs the tuner's pick (median of ${ROUNDS} alternating rounds, min–max)`,
  headers: ['model', 'dtype', 'pick', 'tuning s', 'default tokens/s', 'tuned tokens/s', 'tuned / default', 'device ms default → tuned', 'other CPU'],
  rows: results.map((r) => [
    r.preset,
    r.dtype,
    r.picked,
    (r.tuneMs / 1000).toFixed(1),
    spread(r.defaultTokensPerS),
    spread(r.tunedTokensPerS),
    `${(median(r.tunedTokensPerS) / median(r.defaultTokensPerS)).toFixed(2)}x`,
    `${median(r.defaultDeviceMs).toFixed(1)} → ${median(r.tunedDeviceMs).toFixed(1)}`,
    `${(r.otherCpuShare * 100).toFixed(0)} %`,
  ]),
};
const kernelTables = results.map((r) => ({
  title: `${r.preset} ${r.dtype}: device ms of one pass over the workload's shapes per candidate (fastest of 3 trials)`,
  headers: ['kernel', 'candidate', 'ms', 'vs default'],
  rows: r.timings.map((t) => {
    const start = choiceNames(defaultKernelChoices)[t.kernel];
    const base = r.timings.find((x) => x.kernel === t.kernel && x.candidate === start)?.ms ?? null;
    return [t.kernel, t.candidate, t.ms === null ? `failed: ${t.error ?? ''}` : t.ms.toFixed(3), t.ms !== null && base !== null ? `${(base / t.ms).toFixed(2)}x` : '-'];
  }),
}));
console.log(`\n${textTable(summary)}`);
const m = machineInfo();
const md = [
  '# Kernel self-tuning: default kernels vs the pick, side by side',
  '',
  `- command: \`npm run bench -- tune ${process.argv.slice(2).join(' ')}\``,
  `- adapter: ${adapterName}; machine: ${m.cpuModel} (${m.cpuCores} cores); ${date.toISOString()}`,
  '- The tuner runs as a server runs it (trials queued through the runner). Candidates: src/kernels/candidates.ts; every one is tested against the float64 reference in test/kernels/.',
  "- The tuner leaves the default only for a candidate ≥ 5 % faster on the workload's shapes (noise margin).",
  '',
  markdownTable(summary),
  '',
  ...kernelTables.flatMap((t) => [markdownTable(t), '']),
].join('\n');
const stem = `kernel-tune-${adapterSlug(adapterName)}-${fileStamp(date)}`;
await writeReport(args.get('out') ?? 'bench/results', stem, { command: commandLine(), machine: m, adapter: adapterName, date: date.toISOString(), batch: [BATCH, LENGTH], rounds: ROUNDS, results }, md);
console.log(`wrote ${args.get('out') ?? 'bench/results'}/${stem}.{json,md}`);
ctx.destroy();
