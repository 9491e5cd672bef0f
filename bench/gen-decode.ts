/**
 * Decode throughput (issue 13): B sequences decoding together (B = 1, 8, 32),
 * on the base model and with every sequence on its own adapter (mixed ranks
 * 4-64, mixed target modules); tokens/s and ms per step, then where the time
 * of a decode step goes, per operator, from steps profiled per dispatch.
 *
 *   npm run bench -- gen-decode [--preset llama-bench] [--batches 1,8,32] [--steps 24] [--prompt 16] [--quick] [--out bench/results]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PhaseTiming } from '../src/gpu/batch-encoder.js';
import { GpuContext } from '../src/gpu/context.js';
import { startGenerationRuntime, type GenerationRuntime } from '../src/runtime/generation-runtime.js';
import type { StepReport } from '../src/scheduler/generation/step-scheduler.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { flag, intFlag } from './lib/args.js';
import { adapterSpecs, benchGenerationConfig, GEN_BENCH_COMMANDS, listFlag, makeDecoderBase, percentile, presetFlag, writeAdapters } from './lib/gen-workload.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReportWithChart, type Table } from './lib/report.js';
import { barChartSvg } from './lib/svg-chart.js';

const quick = process.argv.includes('--quick');
const preset = presetFlag(flag('--preset'), 'llama-bench');
const batches = listFlag(flag('--batches'), quick ? [1, 8] : [1, 8, 32], '--batches');
const timedSteps = intFlag('--steps', quick ? 6 : 24);
const promptTokens = intFlag('--prompt', 16);
const profiledSteps = quick ? 2 : 4;
const outDir = flag('--out') ?? 'bench/results';
const WARM_STEPS = 2;
const note = (msg: string): void => void process.stderr.write(`${msg}\n`);

type Variant = 'base' | 'adapters';

interface DecodeMeasure {
  variant: Variant;
  batch: number;
  stepMs: number[];
  /** Device ms per dispatch label summed per operator, per profiled step (null: no timestamp-query). */
  operatorMs: Map<string, number> | null;
  profiledWallMs: number[];
}

/** `l3.up.lora_expand` → `lora (shrink+expand)`; `l3.attention` → `attention`. */
function operatorOf(label: string): string {
  if (label.includes('.lora_')) return 'lora (shrink+expand)';
  return label.replace(/^l\d+\./, '');
}

/**
 * Run B sequences of `promptTokens` random tokens until each has decoded
 * WARM_STEPS + steps tokens; keep the steps where all B decode and none prefills.
 */
async function decodeSteps(rt: GenerationRuntime, reports: StepReport[], batch: number, tasks: (string | null)[], steps: number, vocab: number, seed: number): Promise<StepReport[]> {
  const rng = new Rng(seed);
  reports.length = 0;
  await Promise.all(
    Array.from({ length: batch }, (_, i) =>
      rt.gateway.generate({
        task: tasks[i % tasks.length] ?? null,
        promptIds: Array.from({ length: promptTokens }, () => rng.int(0, vocab - 16)),
        maxTokens: WARM_STEPS + steps + 1,
        sampling: { temperature: 0 },
        ignoreEos: true,
      }),
    ),
  );
  return reports.filter((r) => r.decodeRows === batch && r.prefillRows === 0).slice(WARM_STEPS, WARM_STEPS + steps);
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-bench-gen-decode-'));
  const started = new Date();
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  const adapterName = ctx.capabilities.adapterName;
  try {
    note(`gen-decode: ${preset} on ${adapterName}; writing the model and ${Math.max(...batches)} adapters ...`);
    const modelDir = join(root, 'model');
    const { vocabSize, parameterCount } = await makeDecoderBase(preset, modelDir);
    const specs = adapterSpecs(Math.max(...batches), 13);
    const taskDirs = await writeAdapters(modelDir, join(root, 'adapters'), specs);
    const config = benchGenerationConfig({ kvCacheBytes: 64 << 20, maxRunning: 256, prefixCaching: false });
    const measures: DecodeMeasure[] = [];
    for (const variant of ['base', 'adapters'] as Variant[]) {
      const tasks = variant === 'base' ? [null] : specs.map((s) => s.id);
      const reports: StepReport[] = [];
      const rt = await startGenerationRuntime(ctx, config, { modelDir, tasks: taskDirs, onStep: (r) => reports.push(r) });
      const profiled: StepReport[] = [];
      const rtProfiled = await startGenerationRuntime(ctx, config, { modelDir, tasks: taskDirs, onStep: (r) => profiled.push(r), profile: 'dispatches' });
      try {
        for (const batch of batches) {
          note(`  ${variant}, batch ${batch}: ${timedSteps} timed decode steps, ${profiledSteps} profiled ...`);
          const timed = await decodeSteps(rt, reports, batch, tasks, timedSteps, vocabSize, 100 + batch);
          const prof = await decodeSteps(rtProfiled, profiled, batch, tasks, profiledSteps, vocabSize, 200 + batch);
          let operatorMs: Map<string, number> | null = null;
          if (prof.every((p) => p.phases !== null && p.phases.length > 0)) {
            operatorMs = new Map();
            for (const p of prof) for (const ph of p.phases as PhaseTiming[]) operatorMs.set(operatorOf(ph.name), (operatorMs.get(operatorOf(ph.name)) ?? 0) + ph.ms / prof.length);
          }
          measures.push({ variant, batch, stepMs: timed.map((r) => r.wallMs), operatorMs, profiledWallMs: prof.map((p) => p.wallMs) });
        }
      } finally {
        await rt.close();
        await rtProfiled.close();
      }
    }

    const med = (xs: number[]): number => percentile(xs, 50);
    const baseMs = (b: number): number => med(measures.find((m) => m.variant === 'base' && m.batch === b)!.stepMs);
    const throughput: Table = {
      title: `Decode throughput, ${preset} (${(parameterCount / 1e6).toFixed(1)}M params, f32), prompt ${promptTokens} tokens, median of ${timedSteps} steps where all B sequences decode (wall ms per step, incl. sampling on the host)`,
      headers: ['variant', 'batch', 'ms/step p50', 'ms/step min', 'tokens/s', 'vs base'],
      rows: measures.map((m) => [
        m.variant === 'base' ? 'base model' : `${m.batch} adapters (one per seq)`,
        String(m.batch),
        fmt(med(m.stepMs), 2),
        fmt(Math.min(...m.stepMs), 2),
        fmt((m.batch * 1000) / med(m.stepMs), 1),
        m.variant === 'base' ? '1.00' : fmt(med(m.stepMs) / baseMs(m.batch), 2),
      ]),
      note: `Adapters: ranks from {${[...new Set(specs.map((s) => s.rank))].sort((a, b) => a - b).join(',')}}, targets q/v, q/k/v/o or all linear (seeded); 'vs base' = step time / base step time at the same batch.`,
    };
    const hasProfile = measures.every((m) => m.operatorMs !== null);
    const operators = hasProfile ? [...new Set(measures.flatMap((m) => [...m.operatorMs!.keys()]))] : [];
    const totalOf = (m: DecodeMeasure): number => [...(m.operatorMs?.values() ?? [])].reduce((a, b) => a + b, 0);
    operators.sort((a, b) => {
      const share = (op: string): number => measures.reduce((s, m) => s + (m.operatorMs!.get(op) ?? 0) / totalOf(m), 0);
      return share(b) - share(a);
    });
    const opTable: Table = hasProfile
      ? {
          title: `Device time of one decode step by operator (ms, summed over layers; share of the step's device time), mean of ${profiledSteps} steps profiled per dispatch`,
          headers: ['operator', ...measures.map((m) => `${m.variant === 'base' ? 'base' : 'lora'} B=${m.batch}`)],
          rows: [
            ...operators.map((op) => [op, ...measures.map((m) => { const v = m.operatorMs!.get(op) ?? 0; return `${fmt(v, 3)} (${fmt((100 * v) / totalOf(m), 0)}%)`; })]),
            ['device total', ...measures.map((m) => fmt(totalOf(m), 2))],
            ['wall ms of the profiled step', ...measures.map((m) => fmt(med(m.profiledWallMs), 2))],
          ],
          note: 'Per-dispatch profiling puts every dispatch in its own timed pass, so the device total is above an unprofiled step; shares are what to read.',
        }
      : {
          title: 'Device time by operator: not available (the adapter lacks timestamp-query); wall ms of the profiled steps only',
          headers: ['variant', 'batch', 'wall ms/step'],
          rows: measures.map((m) => [m.variant, String(m.batch), fmt(med(m.profiledWallMs), 2)]),
        };
    console.log(`\n${textTable(throughput)}\n\n${textTable(opTable)}`);

    const stem = `gen-decode-${adapterSlug(adapterName)}-${fileStamp(started)}`;
    const cmd = commandLine();
    const machine = machineInfo();
    const md = [
      `# Generation benchmark: decode throughput (${started.toISOString()})`,
      '',
      `Command: \`${cmd.npm ?? cmd.node}\`  `,
      `Machine: ${machine.cpuModel} x${machine.cpuCores}; adapter: ${adapterName}; model: ${preset}, f32`,
      '',
      markdownTable(throughput),
      '',
      markdownTable(opTable),
      '',
      `![decode tokens/s](${stem}.svg)`,
      '',
      GEN_BENCH_COMMANDS,
    ].join('\n');
    const svg = barChartSvg({
      title: `Decode tokens/s, ${preset} on ${adapterSlug(adapterName)}`,
      xLabel: 'sequences decoding together',
      yLabel: 'generated tokens/s',
      categories: batches.map(String),
      series: (['base', 'adapters'] as Variant[]).map((v) => ({
        name: v === 'base' ? 'base model' : 'one adapter per seq',
        values: batches.map((b) => { const m = measures.find((x) => x.variant === v && x.batch === b)!; return (b * 1000) / med(m.stepMs); }),
      })),
    });
    const json = {
      command: cmd,
      date: started.toISOString(),
      machine,
      adapter: adapterName,
      model: { preset, parameterCount, dtype: 'f32' },
      promptTokens,
      timestampQuery: ctx.capabilities.timestampQuery,
      adapters: specs,
      results: measures.map((m) => ({
        variant: m.variant,
        batch: m.batch,
        stepMs: m.stepMs.map((x) => round(x, 3)),
        stepMsP50: round(med(m.stepMs), 3),
        tokensPerS: round((m.batch * 1000) / med(m.stepMs), 2),
        operatorDeviceMs: m.operatorMs ? Object.fromEntries([...m.operatorMs].map(([k, v]) => [k, round(v, 4)])) : null,
        profiledWallMs: m.profiledWallMs.map((x) => round(x, 3)),
      })),
    };
    await writeReportWithChart(outDir, stem, json, md, svg);
  } finally {
    ctx.destroy();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
