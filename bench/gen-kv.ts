/**
 * Paged KV cache use (issue 13): a mixed workload (base + adapters, Zipf
 * popularity, half the prompts starting with their task's shared 48-token
 * system prompt) through the generation runtime, with prefix caching on and
 * off. After every step: blocks in use vs the tokens the running sequences
 * hold, and per sequence the waste = blocks·blockTokens − tokens, which paging
 * should keep under one block.
 *
 *   npm run bench -- gen-kv [--requests 96] [--rate 16] [--adapters 8] [--preset llama-bench] [--quick] [--out bench/results]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateSamplingParams } from '../src/engine/generation/sampling.js';
import { GpuContext } from '../src/gpu/context.js';
import { startGenerationRuntime } from '../src/runtime/generation-runtime.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { flag, intFlag } from './lib/args.js';
import { adapterSpecs, benchGenerationConfig, GEN_BENCH_COMMANDS, makeDecoderBase, makeTrace, percentile, presetFlag, runOpenLoop, writeAdapters, type TraceRequest } from './lib/gen-workload.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReportWithChart, type Table } from './lib/report.js';
import { lineChartSvg } from './lib/svg-chart.js';

const quick = process.argv.includes('--quick');
const preset = presetFlag(flag('--preset'), 'llama-bench');
const requests = intFlag('--requests', quick ? 24 : 96);
const ratePerS = Number(flag('--rate') ?? 16);
const adapters = intFlag('--adapters', 8);
const outDir = flag('--out') ?? 'bench/results';
const SYSTEM_PROMPT_TOKENS = 48;
const note = (msg: string): void => void process.stderr.write(`${msg}\n`);

interface StepSample {
  step: number;
  running: number;
  usedBlocks: number;
  /** Σ over running sequences of prompt + generated tokens. */
  tokens: number;
  /** Σ over running sequences of their block tables' lengths (shared blocks counted in each). */
  tableBlocks: number;
  /** Per running sequence: table blocks · blockTokens − its tokens. */
  wastes: number[];
}

interface KvRun {
  prefixCaching: boolean;
  samples: StepSample[];
  blockTokens: number;
  totalBlocks: number;
  prefixQueries: number;
  prefixHits: number;
  cachedPromptTokens: number;
  generated: number;
  makespanS: number;
}

/** Each task's requests start with that task's system prompt half of the time (a shared prefix to cache). */
function withSystemPrompts(trace: TraceRequest[], vocab: number, seed: number): TraceRequest[] {
  const sys = new Map<number, number[]>();
  const rng = new Rng(seed);
  return trace.map((r) => {
    if (rng.next() >= 0.5) return r;
    if (!sys.has(r.adapter)) sys.set(r.adapter, Array.from({ length: SYSTEM_PROMPT_TOKENS }, () => rng.int(0, vocab - 16)));
    return { ...r, promptIds: [...sys.get(r.adapter)!, ...r.promptIds] };
  });
}

/** Adapter index 0 is the base model (the most popular "task"); i > 0 is adapter a(i-1). */
const taskOf = (r: TraceRequest): string | null => (r.adapter === 0 ? null : `a${r.adapter - 1}`);

async function runKv(ctx: GpuContext, modelDir: string, taskDirs: Map<string, string>, trace: TraceRequest[], prefixCaching: boolean): Promise<KvRun> {
  const config = benchGenerationConfig({ kvCacheBytes: 64 << 20, maxRunning: 64, maxStepTokens: 512, prefixCaching });
  // The scheduler numbers sequences 1, 2, ... in submit order; the block manager keys tables by that id.
  const live = new Map<number, { prompt: number; generated: number }>();
  const samples: StepSample[] = [];
  let submitted = 0;
  let cachedPromptTokens = 0;
  const rt = await startGenerationRuntime(ctx, config, {
    modelDir,
    tasks: taskDirs,
    onStep: () => {
      const bt = rt.blocks.blockTokens;
      const s: StepSample = { step: samples.length, running: 0, usedBlocks: rt.blocks.stats().usedBlocks, tokens: 0, tableBlocks: 0, wastes: [] };
      for (const [id, seq] of live) {
        if (!rt.blocks.has(id)) continue; // waiting or preempted: holds no blocks
        const held = seq.prompt + seq.generated;
        const table = rt.blocks.blockTable(id).length;
        s.running += 1;
        s.tokens += held;
        s.tableBlocks += table;
        s.wastes.push(table * bt - held);
      }
      samples.push(s);
    },
  });
  try {
    const sampling = validateSamplingParams({ temperature: 0 });
    const { outcomes, makespanMs } = await runOpenLoop(trace, async (req) => {
      const id = ++submitted;
      const seq = { prompt: req.promptIds.length, generated: 0 };
      live.set(id, seq);
      const out = await rt.scheduler.submit({
        taskId: taskOf(req),
        promptIds: req.promptIds,
        maxTokens: req.maxTokens,
        sampling,
        stopTokenIds: [],
        onToken: () => void (seq.generated += 1),
      });
      live.delete(id);
      cachedPromptTokens += out.cachedPromptTokens;
      return { ttftMs: out.ttftMs, tpotMs: out.tpotMs, completionTokens: out.tokenIds.length };
    });
    const st = rt.blocks.stats();
    return {
      prefixCaching,
      samples,
      blockTokens: rt.blocks.blockTokens,
      totalBlocks: st.totalBlocks,
      prefixQueries: st.prefixQueries,
      prefixHits: st.prefixHits,
      cachedPromptTokens,
      generated: outcomes.reduce((n, o) => n + o.completionTokens, 0),
      makespanS: makespanMs / 1000,
    };
  } finally {
    await rt.close();
  }
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-bench-gen-kv-'));
  const started = new Date();
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  const adapterName = ctx.capabilities.adapterName;
  try {
    note(`gen-kv: ${preset} on ${adapterName}; ${requests} requests at ${ratePerS} req/s over the base + ${adapters} adapters ...`);
    const modelDir = join(root, 'model');
    const { vocabSize } = await makeDecoderBase(preset, modelDir);
    const taskDirs = await writeAdapters(modelDir, join(root, 'adapters'), adapterSpecs(adapters, 13));
    const trace = withSystemPrompts(
      makeTrace({ requests, ratePerS, promptTokens: [8, 64], outputTokens: [8, 64], vocabSize, seed: 21 }, adapters + 1),
      vocabSize,
      22,
    );
    const runs: KvRun[] = [];
    for (const prefixCaching of [true, false]) {
      note(`  prefix caching ${prefixCaching ? 'on' : 'off'} ...`);
      runs.push(await runKv(ctx, modelDir, taskDirs, trace, prefixCaching));
    }

    const rows = runs.map((r) => {
      const bt = r.blockTokens;
      const busy = r.samples.filter((s) => s.running > 0);
      const wastes = busy.flatMap((s) => s.wastes);
      const mean = (f: (s: StepSample) => number): number => busy.reduce((a, s) => a + f(s), 0) / Math.max(1, busy.length);
      const maxWaste = Math.max(...wastes);
      return {
        prefixCaching: r.prefixCaching,
        steps: busy.length,
        meanRunning: mean((s) => s.running),
        meanUsedBlocks: mean((s) => s.usedBlocks),
        peakUsedBlocks: Math.max(...busy.map((s) => s.usedBlocks)),
        meanTokens: mean((s) => s.tokens),
        meanTableBlocks: mean((s) => s.tableBlocks),
        /** KV slots in use that hold a token of a running sequence (shared blocks hold tokens of several). */
        meanUtilization: mean((s) => s.tokens / Math.max(1, s.usedBlocks * bt)),
        wasteTokensMean: wastes.reduce((a, b) => a + b, 0) / Math.max(1, wastes.length),
        wasteTokensP99: percentile(wastes, 99),
        wasteTokensMax: maxWaste,
        wasteTokensMin: Math.min(...wastes),
        withinOneBlock: maxWaste <= bt,
        prefixHitRate: r.prefixQueries > 0 ? r.prefixHits / r.prefixQueries : 0,
        cachedPromptTokens: r.cachedPromptTokens,
        tokensPerS: r.generated / r.makespanS,
      };
    });
    const bt = runs[0]!.blockTokens;
    const table: Table = {
      title: `KV cache use after every step: ${requests} requests (base + ${adapters} adapters, Zipf), prompt U[8,64] (+ a shared ${SYSTEM_PROMPT_TOKENS}-token task system prompt on half), output U[8,64]; blocks of ${bt} tokens, ${runs[0]!.totalBlocks} blocks`,
      headers: ['prefix caching', 'steps', 'running', 'used blocks (mean / peak)', 'Σ table blocks', 'tokens held', 'slots holding a token', 'waste/seq tokens (mean, p99, max)', 'waste ≤ 1 block', 'prompt tokens cached', 'tokens/s'],
      rows: rows.map((r) => [
        r.prefixCaching ? 'on' : 'off',
        String(r.steps),
        fmt(r.meanRunning, 1),
        `${fmt(r.meanUsedBlocks, 1)} / ${r.peakUsedBlocks}`,
        fmt(r.meanTableBlocks, 1),
        fmt(r.meanTokens, 0),
        `${fmt(100 * r.meanUtilization, 1)} %`,
        `${fmt(r.wasteTokensMean, 1)}, ${fmt(r.wasteTokensP99, 0)}, ${r.wasteTokensMax}`,
        r.withinOneBlock ? 'PASS' : 'FAIL',
        `${r.cachedPromptTokens} (${fmt(100 * r.prefixHitRate, 1)} %)`,
        fmt(r.tokensPerS, 1),
      ]),
      note:
        `tokens held = prompt + generated tokens of each running sequence (the last sampled token is written at its next step, so a sequence can be 1 token past its table: min waste ${Math.min(...rows.map((r) => r.wasteTokensMin))}). ` +
        '"slots holding a token" = tokens held / (used blocks · block tokens), mean over steps; above 100 % when sequences share prefix blocks. Σ table blocks counts a shared block once per sequence.',
    };
    console.log(`\n${textTable(table)}`);

    const stem = `gen-kv-${adapterSlug(adapterName)}-${fileStamp(started)}`;
    const cmd = commandLine();
    const machine = machineInfo();
    const svg = lineChartSvg({
      title: `KV slots in use vs tokens held, per step (${preset})`,
      xLabel: 'step',
      yLabel: 'tokens',
      series: runs.flatMap((r) => [
        { name: `slots used, cache ${r.prefixCaching ? 'on' : 'off'}`, points: r.samples.map((s) => [s.step, s.usedBlocks * bt] as [number, number]) },
        { name: `tokens held, cache ${r.prefixCaching ? 'on' : 'off'}`, points: r.samples.map((s) => [s.step, s.tokens] as [number, number]) },
      ]),
    });
    const md = [
      `# Generation benchmark: paged KV cache use (${started.toISOString()})`,
      '',
      `Command: \`${cmd.npm ?? cmd.node}\`  `,
      `Machine: ${machine.cpuModel} x${machine.cpuCores}; adapter: ${adapterName}; model: ${preset} (random weights, f32)`,
      '',
      markdownTable(table),
      '',
      `![KV use per step](${stem}.svg)`,
      '',
      GEN_BENCH_COMMANDS,
    ].join('\n');
    const json = {
      command: cmd,
      date: started.toISOString(),
      machine,
      adapter: adapterName,
      model: preset,
      workload: { requests, ratePerS, adapters, systemPromptTokens: SYSTEM_PROMPT_TOKENS, promptTokens: [8, 64], outputTokens: [8, 64] },
      blockTokens: bt,
      results: rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'number' ? round(v, 3) : v]))),
      perStep: runs.map((r) => ({ prefixCaching: r.prefixCaching, usedBlocks: r.samples.map((s) => s.usedBlocks), tokens: r.samples.map((s) => s.tokens), running: r.samples.map((s) => s.running) })),
    };
    await writeReportWithChart(outDir, stem, json, md, svg);
  } finally {
    ctx.destroy();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
