/**
 * Many adapters over one decoder (issue 13, S-LoRA's experiment): N LoRA
 * adapters of mixed ranks (4-64) on mixed target modules, Zipf(1) popularity,
 * Poisson arrivals, uniform prompt and output lengths; the same request trace
 * through four systems, side by side in one run:
 *
 *   (a) merged   one merged model per adapter, swapped on demand (bench/lib/merged-lora.ts)
 *   (b) peft     unmerged, one adapter per step (StepScheduler oneAdapterPerStep)
 *   (c) ours     unmerged, all adapters in one continuous batch (the default runtime)
 *   (d) base     the same trace with every request on the base model (LoRA overhead)
 *
 *   npm run bench -- gen-adapters [--adapters 1,8,64,512] [--rate 20] [--requests 100 | --seconds 5]
 *       [--prompt 8-64] [--output 8-32] [--preset llama-bench] [--systems a,b,c,d] [--quick] [--out bench/results]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PetServeConfig } from '../src/config/config.js';
import { GpuContext } from '../src/gpu/context.js';
import { loadDecoderCheckpoint } from '../src/model/decoder-checkpoint.js';
import type { DecoderWeights } from '../src/model/families/decoder/types.js';
import { loadDecoderPeft } from '../src/pet/formats/peft-decoder.js';
import { startGenerationRuntime } from '../src/runtime/generation-runtime.js';
import type { StepReport } from '../src/scheduler/generation/step-scheduler.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { silentLogger } from '../src/util/logger.js';
import { flag, intFlag } from './lib/args.js';
import { otherCpuShare, sampleCpu } from './lib/cpu-load.js';
import {
  adapterSpecs,
  GEN_BENCH_COMMANDS,
  benchGenerationConfig,
  listFlag,
  makeDecoderBase,
  makeTrace,
  percentile,
  presetFlag,
  rangeFlag,
  runOpenLoop,
  writeAdapters,
  type AdapterSpec,
  type RequestOutcome,
  type TraceRequest,
  type TraceSpec,
} from './lib/gen-workload.js';
import { MergedModelServer, mergeLora } from './lib/merged-lora.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReportWithChart, type Table } from './lib/report.js';
import { barChartSvg } from './lib/svg-chart.js';

const quick = process.argv.includes('--quick');
const preset = presetFlag(flag('--preset'), 'llama-bench');
const adapterCounts = listFlag(flag('--adapters'), quick ? [1, 64] : [1, 8, 64, 512], '--adapters');
const ratePerS = Number(flag('--rate') ?? 20);
if (!(ratePerS > 0)) throw new Error(`--rate must be a positive number of requests per second, got ${flag('--rate')}`);
const requests = flag('--seconds') !== undefined ? Math.max(1, Math.round(intFlag('--seconds', 1) * ratePerS)) : intFlag('--requests', quick ? 24 : 100);
const promptTokens = rangeFlag(flag('--prompt'), [8, 64], '--prompt');
const outputTokens = rangeFlag(flag('--output'), [8, 32], '--output');
const systemsFlag = (flag('--systems') ?? 'a,b,c,d').split(',');
const seed = intFlag('--seed', 13, 0);
const outDir = flag('--out') ?? 'bench/results';
const note = (msg: string): void => void process.stderr.write(`${msg}\n`);

type System = 'a' | 'b' | 'c' | 'd';
const SYSTEM_NAMES: Record<System, string> = {
  a: '(a) merged, swap per adapter',
  b: '(b) unmerged, one adapter per step',
  c: '(c) ours, all adapters per step',
  d: '(d) base model only',
};
for (const s of systemsFlag) if (!(s in SYSTEM_NAMES)) throw new Error(`--systems takes a,b,c,d; got ${s}`);
const systems = systemsFlag as System[];

interface RunResult {
  system: System;
  adapters: number;
  requests: number;
  makespanS: number;
  generatedTokens: number;
  tokensPerS: number;
  requestsPerS: number;
  ttftMs: { p50: number; p99: number };
  tpotMs: { p50: number; p99: number };
  steps: number;
  meanRowsPerStep: number;
  meanAdaptersPerStep: number;
  preempted: number;
  gpu: { weightsBytes: number; kvBytes: number; poolBudgetBytes: number; poolPeakUsedBytes: number; totalBytes: number };
  swaps?: { count: number; msP50: number; msTotal: number };
  /** Share of requests whose greedy tokens equal system (c)'s for the same request. */
  sameTokensAsOurs?: number;
  tokenIds: number[][];
  /** Share of the machine's CPU that other processes used during the run (they compete with lavapipe). */
  otherCpuShare?: number;
}

function summarize(system: System, adapters: number, outcomes: RequestOutcome[], makespanMs: number, steps: StepReport[]): Omit<RunResult, 'gpu' | 'tokenIds'> {
  const generated = outcomes.reduce((n, o) => n + o.completionTokens, 0);
  const ttft = outcomes.map((o) => o.ttftMs);
  const tpot = outcomes.filter((o) => o.completionTokens > 1).map((o) => o.tpotMs);
  return {
    system,
    adapters,
    requests: outcomes.length,
    makespanS: makespanMs / 1000,
    generatedTokens: generated,
    tokensPerS: generated / (makespanMs / 1000),
    requestsPerS: outcomes.length / (makespanMs / 1000),
    ttftMs: { p50: percentile(ttft, 50), p99: percentile(ttft, 99) },
    tpotMs: { p50: percentile(tpot, 50), p99: percentile(tpot, 99) },
    steps: steps.length,
    meanRowsPerStep: steps.reduce((n, s) => n + s.decodeRows + s.prefillRows, 0) / Math.max(1, steps.length),
    meanAdaptersPerStep: steps.reduce((n, s) => n + s.adapters, 0) / Math.max(1, steps.length),
    preempted: steps.at(-1)?.preempted ?? 0,
  };
}

const taskOf = (req: TraceRequest): string => `a${req.adapter}`;

/** (b), (c), (d): the generation runtime, every request handed to the gateway at its arrival. */
async function runRuntime(
  ctx: GpuContext,
  config: PetServeConfig,
  modelDir: string,
  taskDirs: Map<string, string>,
  system: 'b' | 'c' | 'd',
  adapters: number,
  trace: readonly TraceRequest[],
): Promise<RunResult> {
  const steps: StepReport[] = [];
  let poolPeak = 0;
  const tasks = system === 'd' ? new Map<string, string>() : new Map([...taskDirs].slice(0, adapters));
  const rt = await startGenerationRuntime(ctx, config, {
    modelDir,
    tasks,
    onStep: (s) => {
      steps.push(s);
      poolPeak = Math.max(poolPeak, rt.runner.pool.stats().usedBytes);
    },
    ...(system === 'b' ? { oneAdapterPerStep: true } : {}),
  });
  const tokenIds: number[][] = [];
  try {
    const { outcomes, makespanMs } = await runOpenLoop(trace, async (req, i) => {
      const out = await rt.gateway.generate({
        task: system === 'd' ? null : taskOf(req),
        promptIds: req.promptIds,
        maxTokens: req.maxTokens,
        sampling: { temperature: 0 },
        ignoreEos: true,
      });
      tokenIds[i] = out.tokenIds;
      return { ttftMs: out.ttftMs, tpotMs: out.tpotMs, completionTokens: out.usage.completion_tokens };
    });
    const w = rt.runner.weights.bytes;
    const kv = rt.runner.kv.bytes;
    const pool = system === 'd' ? 0 : rt.runner.pool.budgetBytes;
    return {
      ...summarize(system, adapters, outcomes, makespanMs, steps),
      gpu: { weightsBytes: w, kvBytes: kv, poolBudgetBytes: pool, poolPeakUsedBytes: poolPeak, totalBytes: w + kv + pool },
      tokenIds,
    };
  } finally {
    await rt.close();
  }
}

/** (a): merged models, swapped on demand; merged weights for the trace's adapters are built first, off the clock. */
async function runMerged(ctx: GpuContext, config: PetServeConfig, modelDir: string, taskDirs: Map<string, string>, adapters: number, trace: readonly TraceRequest[]): Promise<RunResult & { mergeMs: number }> {
  const checkpoint = await loadDecoderCheckpoint(modelDir);
  const tokenizer = await TextTokenizer.load(modelDir);
  const merged = new Map<string, DecoderWeights>();
  const m0 = performance.now();
  for (const id of new Set(trace.map(taskOf))) merged.set(id, mergeLora(checkpoint.weights, await loadDecoderPeft(taskDirs.get(id)!, checkpoint)));
  const mergeMs = performance.now() - m0;
  const steps: StepReport[] = [];
  const server = new MergedModelServer(ctx, config, checkpoint, tokenizer, (id) => (id === null ? checkpoint.weights : merged.get(id)!), (s) => steps.push(s));
  await server.preload(taskOf(trace[0]!));
  const tokenIds: number[][] = [];
  try {
    const { outcomes, makespanMs } = await runOpenLoop(trace, async (req, i) => {
      const out = await server.generate(taskOf(req), { promptIds: req.promptIds, maxTokens: req.maxTokens, sampling: { temperature: 0 }, ignoreEos: true });
      tokenIds[i] = out.tokenIds;
      // Time in the swap queue is queueing before the first token.
      return { ttftMs: out.swapQueueMs + out.ttftMs, tpotMs: out.tpotMs, completionTokens: out.usage.completion_tokens };
    });
    const sw = server.swapStats;
    return {
      ...summarize('a', adapters, outcomes, makespanMs, steps),
      gpu: { weightsBytes: server.peakWeightsBytes, kvBytes: server.kvBytes, poolBudgetBytes: 0, poolPeakUsedBytes: 0, totalBytes: server.peakWeightsBytes + server.kvBytes },
      swaps: { count: sw.swaps, msP50: percentile(sw.swapMs, 50), msTotal: sw.swapMs.reduce((a, b) => a + b, 0) },
      tokenIds,
      mergeMs,
    };
  } finally {
    await server.close();
  }
}

const MB = 1e6;

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-bench-gen-adapters-'));
  const started = new Date();
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  const adapterName = ctx.capabilities.adapterName;
  try {
    const maxN = Math.max(...adapterCounts);
    note(`gen-adapters: ${preset} on ${adapterName}; writing the model and ${maxN} adapters ...`);
    const modelDir = join(root, 'model');
    const { vocabSize, parameterCount } = await makeDecoderBase(preset, modelDir);
    const specs: AdapterSpec[] = adapterSpecs(maxN, seed);
    const w0 = performance.now();
    const taskDirs = await writeAdapters(modelDir, join(root, 'adapters'), specs);
    note(`  adapters written in ${fmt((performance.now() - w0) / 1000, 1)} s`);
    const config = benchGenerationConfig({ kvCacheBytes: 64 << 20, maxRunning: 128, maxStepTokens: 512, prefixCaching: true });
    const traceSpec: TraceSpec = { requests, ratePerS, promptTokens, outputTokens, vocabSize, seed };

    const results: (RunResult & { mergeMs?: number })[] = [];
    const report = (r: RunResult): void =>
      note(`  N=${r.adapters} ${SYSTEM_NAMES[r.system]}: ${fmt(r.tokensPerS, 1)} tok/s, ${fmt(r.requestsPerS, 2)} req/s, TTFT p50 ${fmt(r.ttftMs.p50, 0)} ms, makespan ${fmt(r.makespanS, 1)} s, other CPU ${fmt(100 * (r.otherCpuShare ?? 0), 0)} %${r.swaps ? `, ${r.swaps.count} swaps` : ''}`);
    // Pipelines compile on first use: warm them up off the clock (every rank and target set, and the base).
    const warmN = Math.min(maxN, 16);
    note(`  warm-up: ${warmN} adapters and the base model ...`);
    const warmTrace = makeTrace({ ...traceSpec, requests: 2 * warmN, ratePerS: 1000 }, 1).map((r, i) => ({ ...r, adapter: i % warmN }));
    await runRuntime(ctx, config, modelDir, taskDirs, 'c', warmN, warmTrace);
    await runRuntime(ctx, config, modelDir, taskDirs, 'd', 0, warmTrace.slice(0, 8));
    if (systems.includes('d')) {
      // Arrivals and lengths do not depend on N: one base-only run serves every N.
      note(`  (d) base only, ${requests} requests at ${ratePerS} req/s ...`);
      const cpu = sampleCpu();
      const r = await runRuntime(ctx, config, modelDir, taskDirs, 'd', 0, makeTrace(traceSpec, 1));
      r.otherCpuShare = otherCpuShare(cpu);
      results.push(r);
      report(r);
    }
    for (const n of adapterCounts) {
      const trace = makeTrace(traceSpec, n);
      note(`  N=${n}: ${requests} requests at ${ratePerS} req/s, ${new Set(trace.map(taskOf)).size} distinct adapters in the trace ...`);
      const order: System[] = (['c', 'b', 'a'] as System[]).filter((s) => systems.includes(s));
      for (const s of order) {
        const cpu = sampleCpu();
        const r: RunResult & { mergeMs?: number } = s === 'a' ? await runMerged(ctx, config, modelDir, taskDirs, n, trace) : await runRuntime(ctx, config, modelDir, taskDirs, s as 'b' | 'c', n, trace);
        r.otherCpuShare = otherCpuShare(cpu);
        results.push(r);
        report(r);
      }
      const ours = results.find((r) => r.system === 'c' && r.adapters === n);
      for (const r of results.filter((x) => x.adapters === n && x.system !== 'c')) {
        if (ours) r.sameTokensAsOurs = r.tokenIds.filter((t, i) => t.length === ours.tokenIds[i]!.length && t.every((x, j) => x === ours.tokenIds[i]![j])).length / r.tokenIds.length;
      }
    }

    const find = (s: System, n: number): (RunResult & { mergeMs?: number }) | undefined => results.find((r) => r.system === s && (s === 'd' || r.adapters === n));
    const rows = adapterCounts.flatMap((n) =>
      (['a', 'b', 'c', 'd'] as System[]).flatMap((s) => {
        const r = find(s, n);
        if (!r) return [];
        return [[
          String(n),
          SYSTEM_NAMES[s],
          fmt(r.tokensPerS, 1),
          fmt(r.requestsPerS, 2),
          fmt(r.ttftMs.p50, 0),
          fmt(r.ttftMs.p99, 0),
          fmt(r.tpotMs.p50, 1),
          fmt(r.tpotMs.p99, 1),
          fmt(r.meanRowsPerStep, 1),
          s === 'a' ? `${r.swaps!.count} (${fmt(r.swaps!.msP50, 0)} ms)` : fmt(r.meanAdaptersPerStep, 1),
          fmt(r.gpu.totalBytes / MB, 1),
          s === 'c' || s === 'd' ? '' : r.sameTokensAsOurs === undefined ? '-' : `${fmt(100 * r.sameTokensAsOurs, 0)} %`,
          `${fmt(100 * (r.otherCpuShare ?? 0), 0)} %`,
        ]];
      }),
    );
    const mainTable: Table = {
      title: `Generation with N adapters: ${requests} requests, Poisson ${ratePerS} req/s, prompt U[${promptTokens.join(',')}], output U[${outputTokens.join(',')}] tokens (greedy, EOS ignored), Zipf(1.0) adapter popularity, ${preset} (${(parameterCount / 1e6).toFixed(1)}M params, f32)`,
      headers: ['N', 'system', 'tokens/s', 'req/s', 'TTFT p50 ms', 'TTFT p99 ms', 'TPOT p50 ms', 'TPOT p99 ms', 'rows/step', 'adapters/step or swaps (p50 ms)', 'GPU MB', 'same tokens as (c)', 'other CPU'],
      rows,
      note:
        'tokens/s = generated tokens / (first arrival .. last answer); TTFT from the scheduled arrival (queueing included). ' +
        'GPU MB = weights + KV cache + adapter pool budget (allocated); (a) holds one merged model. (d) is one run on the same arrivals and lengths, shown at every N. ' +
        '"same tokens as (c)": requests whose greedy output equals (c)\'s token for token (a check that the merge and the batched LoRA compute the same model). ' +
        '"other CPU": share of the machine\'s CPU used by other processes during the run; lavapipe runs the kernels on the same 2 cores, so runs with a high share are slowed (this machine is shared).',
    };
    const memTable: Table = {
      title: 'GPU memory per system (MB): weights, KV cache, adapter pool budget and its peak use',
      headers: ['N', 'system', 'weights', 'KV cache', 'pool budget', 'pool peak used', 'total'],
      rows: results.map((r) => [r.system === 'd' ? '-' : String(r.adapters), SYSTEM_NAMES[r.system], fmt(r.gpu.weightsBytes / MB, 1), fmt(r.gpu.kvBytes / MB, 1), fmt(r.gpu.poolBudgetBytes / MB, 1), fmt(r.gpu.poolPeakUsedBytes / MB, 2), fmt(r.gpu.totalBytes / MB, 1)]),
    };

    // The issue's targets, as measured (not tuned to pass).
    const targets: string[] = [];
    const target = (ok: boolean | null, what: string): void => void targets.push(`- ${ok === null ? 'NOT MEASURED' : ok ? 'PASS' : 'FAIL'}: ${what}`);
    const c64 = find('c', 64);
    const a64 = find('a', 64);
    target(c64 && a64 ? c64.tokensPerS / a64.tokensPerS >= 3 : null, `(c)/(a) ≥ 3x at 64 adapters: ${c64 && a64 ? `${fmt(c64.tokensPerS / a64.tokensPerS, 2)}x (${fmt(c64.tokensPerS, 1)} vs ${fmt(a64.tokensPerS, 1)} tokens/s)` : 'needs N=64 and systems a, c'}`);
    const c1 = find('c', 1);
    const c512 = find('c', 512);
    target(c1 && c512 ? c512.tokensPerS >= 0.85 * c1.tokensPerS : null, `(c) at 512 adapters ≥ 0.85 × (c) at 1: ${c1 && c512 ? `${fmt(c512.tokensPerS / c1.tokensPerS, 3)} (${fmt(c512.tokensPerS, 1)} vs ${fmt(c1.tokensPerS, 1)} tokens/s)` : 'needs N=1 and N=512'}`);
    const d = find('d', 0);
    for (const n of adapterCounts) {
      const c = find('c', n);
      const overhead = c && d ? 1 - c.tokensPerS / d.tokensPerS : null;
      target(overhead === null ? null : overhead <= 0.15, `LoRA overhead 1 − tokens/s(c)/tokens/s(d) ≤ 15% at N=${n}: ${overhead === null ? 'needs systems c, d' : `${fmt(100 * overhead, 1)} %`}`);
    }
    const merges = results.filter((r) => r.mergeMs !== undefined);
    console.log(`\n${textTable(mainTable)}\n\n${textTable(memTable)}\n\nTargets (issue 13):\n${targets.join('\n')}`);

    const stem = `gen-adapters-${adapterSlug(adapterName)}-${fileStamp(started)}`;
    const cmd = commandLine();
    const machine = machineInfo();
    const rankCounts = (n: number): string => {
      const c = new Map<number, number>();
      for (const s of specs.slice(0, n)) c.set(s.rank, (c.get(s.rank) ?? 0) + 1);
      return [...c].sort((a, b) => a[0] - b[0]).map(([r, k]) => `r${r}×${k}`).join(' ');
    };
    const md = [
      `# Generation benchmark: many adapters (${started.toISOString()})`,
      '',
      `Command: \`${cmd.npm ?? cmd.node}\`  `,
      `Machine: ${machine.cpuModel} x${machine.cpuCores}; adapter: ${adapterName}; model: ${preset} (random weights, f32)`,
      '',
      'Workload: the same seeded trace for every system at a given N (arrivals, prompts and output lengths are also the same across N; only the adapter a request names changes). ' +
        `Adapters: rank drawn from {4,8,16,32,64}, alpha = 2·rank, targets drawn from q/v, q/k/v/o, all linear (seeded per adapter; the first N of ${maxN}). ` +
        `Runtime config: KV cache 64 MiB in blocks of ${config.generation.blockTokens} tokens, maxRunning ${config.generation.maxRunning}, maxStepTokens ${config.generation.maxStepTokens}, prefix caching on, adapter pool ${fmt(config.pets.poolBytes / MB, 0)} MB.`,
      '',
      `Ranks of the first N adapters: ${adapterCounts.map((n) => `N=${n}: ${rankCounts(n)}`).join('; ')}.`,
      '',
      'Merged baseline (a): one merged model resident; requests served first come, first served; consecutive requests of the loaded adapter share its continuous batch; ' +
        'when the queue head names another adapter, admission stops, running requests drain, and the runner is rebuilt from that adapter\'s merged weights (swap = destroy + upload + KV cache, timed). ' +
        `Merging (W += scale·B·A on the host) is done before the clock starts (${merges.map((r) => `N=${r.adapters}: ${fmt(r.mergeMs! / 1000, 1)} s`).join(', ')}), as if merged checkpoints were on disk; reading them from disk is not counted, which favours (a).`,
      '',
      markdownTable(mainTable),
      '',
      markdownTable(memTable),
      '',
      '### Targets (issue 13)',
      '',
      ...targets,
      '',
      `![tokens/s by N](${stem}.svg)`,
      '',
      GEN_BENCH_COMMANDS,
    ].join('\n');
    const svg = barChartSvg({
      title: `Generated tokens/s with N adapters, ${preset} on ${adapterSlug(adapterName)}`,
      xLabel: 'adapters (N)',
      yLabel: 'generated tokens/s',
      categories: adapterCounts.map(String),
      series: (['a', 'b', 'c', 'd'] as System[]).filter((s) => systems.includes(s)).map((s) => ({ name: SYSTEM_NAMES[s].replace(/, .*/, ''), values: adapterCounts.map((n) => find(s, n)?.tokensPerS ?? null) })),
    });
    const json = {
      command: cmd,
      date: started.toISOString(),
      machine,
      adapter: adapterName,
      model: { preset, parameterCount, dtype: 'f32' },
      workload: { requests, ratePerS, promptTokens, outputTokens, zipf: 1.0, seed, adapterCounts },
      generation: config.generation,
      poolBytes: config.pets.poolBytes,
      adapters: specs.slice(0, Math.min(maxN, 64)),
      results: results.map(({ tokenIds: _ids, ...r }) => ({
        ...r,
        makespanS: round(r.makespanS, 3),
        tokensPerS: round(r.tokensPerS, 2),
        requestsPerS: round(r.requestsPerS, 3),
        ttftMs: { p50: round(r.ttftMs.p50, 1), p99: round(r.ttftMs.p99, 1) },
        tpotMs: { p50: round(r.tpotMs.p50, 2), p99: round(r.tpotMs.p99, 2) },
        meanRowsPerStep: round(r.meanRowsPerStep, 2),
        meanAdaptersPerStep: round(r.meanAdaptersPerStep, 2),
        ...(r.swaps ? { swaps: { count: r.swaps.count, msP50: round(r.swaps.msP50, 1), msTotal: round(r.swaps.msTotal, 1) } } : {}),
        ...(r.mergeMs !== undefined ? { mergeMs: round(r.mergeMs, 0) } : {}),
        ...(r.sameTokensAsOurs !== undefined ? { sameTokensAsOurs: round(r.sameTokensAsOurs, 3) } : {}),
        otherCpuShare: round(r.otherCpuShare ?? 0, 3),
      })),
      targets,
    };
    await writeReportWithChart(outDir, stem, json, md, svg);
  } finally {
    ctx.destroy();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
