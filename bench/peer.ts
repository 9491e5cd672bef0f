/**
 * Peer benchmark (issue 15): PetServe side by side with ONNX Runtime on the same
 * checkpoint, in one process:
 *  - onnxruntime-web's WebGPU EP on the same Dawn adapter PetServe uses;
 *  - onnxruntime-node on the CPU (what a CPU-only user would pick).
 * The checkpoint is exported to ONNX by bench/lib/onnx-export.ts. Peers get
 * padded batches with an attention mask; PetServe packs the same sequences.
 * Every case first checks that the outputs (pooler output and logits) agree,
 * then times alternating rounds of the engines (tokens/s = real tokens / wall time).
 *
 *   npm run bench -- peer [flags]
 *
 * Flags (lists are comma-separated):
 *   --presets bert-mini,bert-base   --dtypes f32,f16
 *   --batches 1,8,32  --lengths 32,128,512     uniform grid (B × T)
 *   --max-tokens bert-mini=4096,bert-base=256  skip uniform cells with B·T above this (per preset)
 *   --ragged bert-mini=32,bert-base=8          sequences of the long-tailed mix (0 = none)
 *   --ragged-batch 8                           sequences per ragged batch
 *   --rounds 2                                 timed rounds per case (engines alternate)
 *   --budget-s 600                             wall-time budget; split evenly over preset × dtype groups
 *   --kernels tuned                            tuned (the self-tuner runs per group first) | default (tuning.ts)
 *   --engines petserve,ort-webgpu,ort-cpu      --out bench/results
 *
 * Writes bench/results/peer-<adapter>-<stamp>.{json,md} (rewritten after every group).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner } from '../src/engine/model-runner.js';
import { GpuContext } from '../src/gpu/context.js';
import { attentionChoiceName, gemmChoiceName } from '../src/kernels/candidates.js';
import { tuneKernels } from '../src/kernels/tuner/kernel-tuner.js';
import type { Dtype } from '../src/kernels/types.js';
import { loadCheckpoint, type BertCheckpoint } from '../src/model/checkpoint.js';
import { initModel } from '../src/model/init-model.js';
import { isPresetName, type PresetName } from '../src/model/presets.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { flag, intFlag } from './lib/args.js';
import { otherCpuShare, sampleCpu } from './lib/cpu-load.js';
import { chunk, lognormalLengths, summarizeLengths, type LengthSummary } from './lib/lengths.js';
import { exportBertOnnx, ONNX_OPSET, onnxOpTypes } from './lib/onnx-export.js';
import { createOrtCpuEngine, createOrtWebGpuEngine, padBatch, peerVersions, type PaddedBatch, type PeerEngine, type PeerOutputs } from './lib/peer-engines.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';

const ENGINE_IDS = ['petserve', 'ort-webgpu', 'ort-cpu'] as const;
type EngineId = (typeof ENGINE_IDS)[number];
const ENGINE_LABEL: Record<EngineId, string> = { petserve: 'PetServe', 'ort-webgpu': 'ort-web WebGPU', 'ort-cpu': 'ort-node CPU' };

// Outputs are tanh-bounded pooler values and logits of O(1): an absolute bound.
// f16 carries ~3 decimal digits, so two f16 engines are held to 1e-2 (f32: 1e-3).
const AGREEMENT_BOUND: Record<Dtype, number> = { f32: 1e-3, f16: 1e-2 };
// The scheduler bench's long-tailed request mix (bench/scheduler.ts, 'long-tail ≤512').
const RAGGED_MEDIAN = 48;
const RAGGED_SIGMA = 0.9;
// First ids of a BERT vocabulary are [PAD], [unused*], [CLS], ...; stay clear of them.
const FIRST_ORDINARY_ID = 1000;

const log = (msg: string): void => console.error(`[peer] ${msg}`);

// ------------------------------------------------------------------ flags

function listFlag(name: string, fallback: string): string[] {
  return (flag(name) ?? fallback).split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

function intListFlag(name: string, fallback: string): number[] {
  return listFlag(name, fallback).map((s) => {
    const n = Number(s);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name}: '${s}' is not a positive integer`);
    return n;
  });
}

/** `--name bert-mini=4096,bert-base=256` -> per-preset integers. */
function perPresetFlag(name: string, fallback: string, min: number): Map<string, number> {
  const map = new Map<string, number>();
  for (const entry of listFlag(name, fallback)) {
    const [key, value] = entry.split('=');
    const n = Number(value);
    if (!key || !isPresetName(key) || !Number.isSafeInteger(n) || n < min) {
      throw new Error(`${name}: '${entry}' is not <preset>=<integer >= ${min}>`);
    }
    map.set(key, n);
  }
  return map;
}

interface Plan {
  presets: PresetName[];
  dtypes: Dtype[];
  batches: number[];
  lengths: number[];
  maxTokens: Map<string, number>;
  ragged: Map<string, number>;
  raggedBatch: number;
  rounds: number;
  budgetS: number;
  engines: EngineId[];
  /** PetServe's kernels: 'tuned' runs the self-tuner on each group first (as a server's first start does), 'default' keeps tuning.ts. */
  kernels: 'tuned' | 'default';
  outDir: string;
}

function readPlan(): Plan {
  const presets = listFlag('--presets', 'bert-mini,bert-base').map((p) => {
    if (!isPresetName(p)) throw new Error(`--presets: unknown preset '${p}'`);
    return p;
  });
  const dtypes = listFlag('--dtypes', 'f32,f16').map((d) => {
    if (d !== 'f32' && d !== 'f16') throw new Error(`--dtypes: '${d}' is not f32 or f16`);
    return d;
  });
  const engines = listFlag('--engines', ENGINE_IDS.join(',')).map((e) => {
    if (!(ENGINE_IDS as readonly string[]).includes(e)) throw new Error(`--engines: '${e}' is not one of ${ENGINE_IDS.join(', ')}`);
    return e as EngineId;
  });
  if (!engines.includes('petserve')) throw new Error('--engines must include petserve (the peers are compared with it)');
  return {
    presets,
    dtypes,
    batches: intListFlag('--batches', '1,8,32'),
    lengths: intListFlag('--lengths', '32,128,512'),
    maxTokens: perPresetFlag('--max-tokens', 'bert-mini=4096,bert-base=256', 1),
    ragged: perPresetFlag('--ragged', 'bert-mini=32,bert-base=8', 0),
    raggedBatch: intFlag('--ragged-batch', 8),
    rounds: intFlag('--rounds', 2),
    budgetS: intFlag('--budget-s', 600),
    engines,
    kernels: ((): 'tuned' | 'default' => {
      const k = flag('--kernels') ?? 'tuned';
      if (k !== 'tuned' && k !== 'default') throw new Error(`--kernels: '${k}' is not tuned or default`);
      return k;
    })(),
    outDir: flag('--out') ?? 'bench/results',
  };
}

// ------------------------------------------------------------------ cases

/** One measured workload: batches of sequences, run one after another. */
interface BenchCase {
  kind: 'uniform' | 'ragged';
  label: string;
  batches: number[][][];
  realTokens: number;
  /** Tokens the peers compute: each batch padded to its longest sequence. */
  paddedTokens: number;
  lengths: LengthSummary;
}

function makeCase(kind: BenchCase['kind'], label: string, sequences: number[][], perBatch: number): BenchCase {
  const batches = chunk(sequences, perBatch);
  const lengths = sequences.map((s) => s.length);
  return {
    kind,
    label,
    batches,
    realTokens: lengths.reduce((a, b) => a + b, 0),
    paddedTokens: batches.reduce((a, b) => a + b.length * Math.max(...b.map((s) => s.length)), 0),
    lengths: summarizeLengths(lengths),
  };
}

function randomIds(rng: Rng, length: number, vocab: number): number[] {
  return Array.from({ length }, () => rng.int(Math.min(FIRST_ORDINARY_ID, vocab - 1), vocab));
}

function casesFor(plan: Plan, preset: PresetName, ck: BertCheckpoint): { cases: BenchCase[]; skipped: string[] } {
  const rng = new Rng(11);
  const vocab = ck.config.vocabSize;
  const maxLength = ck.config.maxPositionEmbeddings;
  const maxTokens = plan.maxTokens.get(preset) ?? Infinity;
  const cases: BenchCase[] = [];
  const skipped: string[] = [];
  const raggedCount = plan.ragged.get(preset) ?? 0;
  if (raggedCount > 0) {
    const lengths = lognormalLengths(rng, raggedCount, RAGGED_MEDIAN, RAGGED_SIGMA, Math.min(512, maxLength));
    const label = `ragged ${raggedCount} seq, ${plan.raggedBatch}/batch`;
    cases.push(makeCase('ragged', label, lengths.map((n) => randomIds(rng, n, vocab)), plan.raggedBatch));
  }
  const grid = plan.batches.flatMap((B) => plan.lengths.map((T) => ({ B, T }))).sort((a, b) => a.B * a.T - b.B * b.T || a.B - b.B);
  for (const { B, T } of grid) {
    const label = `uniform ${B}×${T}`;
    if (T > maxLength) skipped.push(`${label} (T > ${maxLength} positions)`);
    else if (B * T > maxTokens) skipped.push(`${label} (B·T > --max-tokens ${maxTokens})`);
    else cases.push(makeCase('uniform', label, Array.from({ length: B }, () => randomIds(rng, T, vocab)), B));
  }
  return { cases, skipped };
}

// ------------------------------------------------------------------ engines

/** Runs every batch of a case and returns the per-sequence outputs, concatenated. */
type CaseRunner = (c: BenchCase) => Promise<PeerOutputs>;

function concatOutputs(parts: PeerOutputs[]): PeerOutputs {
  const cat = (arrays: Float32Array[]): Float32Array => {
    const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
    let at = 0;
    for (const a of arrays) {
      out.set(a, at);
      at += a.length;
    }
    return out;
  };
  const logits = parts.map((p) => p.logits);
  return { pooled: cat(parts.map((p) => p.pooled)), logits: logits.every((l) => l !== null) ? cat(logits as Float32Array[]) : null };
}

function petServeRunner(runner: ModelRunner): CaseRunner {
  return async (c) => {
    const parts: PeerOutputs[] = [];
    for (const batch of c.batches) {
      const r = await runner.run({ inputIds: batch }, { pooled: true, logits: true });
      parts.push({ pooled: r.pooled!, logits: r.logits });
    }
    return concatOutputs(parts);
  };
}

function peerRunner(engine: PeerEngine): CaseRunner {
  // Padding is the caller's work, done once outside the timed runs.
  const padded = new WeakMap<BenchCase, PaddedBatch[]>();
  return async (c) => {
    let batches = padded.get(c);
    if (!batches) {
      batches = c.batches.map(padBatch);
      padded.set(c, batches);
    }
    const parts: PeerOutputs[] = [];
    for (const b of batches) parts.push(await engine.run(b));
    return concatOutputs(parts);
  };
}

function maxAbsDiff(a: PeerOutputs, b: PeerOutputs): number {
  let m = 0;
  const scan = (x: Float32Array, y: Float32Array): void => {
    if (x.length !== y.length) throw new Error(`output sizes differ: ${x.length} vs ${y.length}`);
    for (let i = 0; i < x.length; i++) {
      const d = Math.abs(x[i]! - y[i]!);
      m = Number.isNaN(d) ? Infinity : Math.max(m, d);
    }
  };
  scan(a.pooled, b.pooled);
  if (a.logits && b.logits) scan(a.logits, b.logits);
  return m;
}

// ------------------------------------------------------------------ measurement

interface EngineResult {
  /** First run (pipeline compilation, arena sizing), ms. */
  firstRunMs: number;
  runsMs: number[];
  tokensPerSecond: { median: number; min: number; max: number };
  otherCpuShare: number;
}

interface CaseResult {
  preset: PresetName;
  dtype: Dtype;
  kind: BenchCase['kind'];
  label: string;
  sequences: number;
  batches: number;
  realTokens: number;
  paddedTokens: number;
  lengths: LengthSummary;
  engines: Partial<Record<EngineId, EngineResult>>;
  /** max |peer − PetServe| over pooler output and logits. */
  maxAbsDiff: Partial<Record<EngineId, number>>;
  agreementBound: number;
  agrees: boolean;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

async function measureCase(
  c: BenchCase,
  runners: Map<EngineId, CaseRunner>,
  rounds: number,
  meta: { preset: PresetName; dtype: Dtype },
): Promise<CaseResult> {
  const ids = [...runners.keys()];
  const first = new Map<EngineId, { ms: number; out: PeerOutputs }>();
  for (const id of ids) {
    const t0 = performance.now();
    const out = await runners.get(id)!(c);
    first.set(id, { ms: performance.now() - t0, out });
  }
  const reference = first.get('petserve')!.out;
  const diffs: Partial<Record<EngineId, number>> = {};
  for (const id of ids) if (id !== 'petserve') diffs[id] = maxAbsDiff(first.get(id)!.out, reference);

  // Rounds alternate the engines (rotating who goes first) so that load from
  // other processes on this shared machine falls on all of them alike.
  const runsMs = new Map<EngineId, number[]>(ids.map((id) => [id, []]));
  const cpuBefore = sampleCpu();
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < ids.length; k++) {
      const id = ids[(r + k) % ids.length]!;
      const t0 = performance.now();
      await runners.get(id)!(c);
      runsMs.get(id)!.push(performance.now() - t0);
    }
  }
  const otherShare = otherCpuShare(cpuBefore);
  const engines: Partial<Record<EngineId, EngineResult>> = {};
  for (const id of ids) {
    const tps = runsMs.get(id)!.map((ms) => (c.realTokens * 1000) / ms);
    engines[id] = {
      firstRunMs: round(first.get(id)!.ms, 1),
      runsMs: runsMs.get(id)!.map((ms) => round(ms, 1)),
      tokensPerSecond: { median: round(median(tps), 1), min: round(Math.min(...tps), 1), max: round(Math.max(...tps), 1) },
      otherCpuShare: round(otherShare, 3),
    };
  }
  const bound = AGREEMENT_BOUND[meta.dtype];
  return {
    ...meta,
    kind: c.kind,
    label: c.label,
    sequences: c.batches.reduce((n, b) => n + b.length, 0),
    batches: c.batches.length,
    realTokens: c.realTokens,
    paddedTokens: c.paddedTokens,
    lengths: c.lengths,
    engines,
    maxAbsDiff: Object.fromEntries(Object.entries(diffs).map(([k, v]) => [k, Number(v.toExponential(3))])),
    agreementBound: bound,
    agrees: Object.values(diffs).every((d) => d <= bound),
  };
}

// ------------------------------------------------------------------ report

function resultTable(results: CaseResult[], engines: EngineId[]): Table {
  const peers = engines.filter((e) => e !== 'petserve');
  const tps = (r: CaseResult, id: EngineId): string => {
    const e = r.engines[id];
    return e ? `${fmt(e.tokensPerSecond.median, 0)} (${fmt(e.tokensPerSecond.min, 0)}–${fmt(e.tokensPerSecond.max, 0)})` : '-';
  };
  const ratio = (r: CaseResult, id: EngineId): string => {
    const a = r.engines.petserve?.tokensPerSecond.median;
    const b = r.engines[id]?.tokensPerSecond.median;
    return a && b ? `${fmt(a / b, 2)}x` : '-';
  };
  return {
    title: 'Tokens/s (real tokens; median of the rounds, min–max) and agreement with PetServe',
    headers: [
      'model',
      'dtype',
      'case',
      'tokens (padded)',
      ...engines.map((e) => ENGINE_LABEL[e]),
      ...peers.map((p) => `PetServe / ${ENGINE_LABEL[p]}`),
      ...peers.map((p) => `max |Δ| ${ENGINE_LABEL[p]}`),
      'agree',
    ],
    align: ['left', 'left', 'left'],
    rows: results.map((r) => [
      r.preset,
      r.dtype,
      r.label,
      r.kind === 'ragged' ? `${r.realTokens} (${r.paddedTokens})` : String(r.realTokens),
      ...engines.map((e) => tps(r, e)),
      ...peers.map((p) => ratio(r, p)),
      ...peers.map((p) => (r.maxAbsDiff[p] !== undefined ? r.maxAbsDiff[p]!.toExponential(1) : '-')),
      r.agrees ? `yes (≤ ${r.agreementBound})` : `NO (> ${r.agreementBound})`,
    ]),
  };
}

// ------------------------------------------------------------------ main

/**
 * Claims `<stem>.json` (or `<stem>-2.json`, ...) by creating it exclusively, so two
 * runs started in the same minute (say one per preset) never overwrite each other.
 */
async function reserveStem(dir: string, stem: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (let n = 1; ; n++) {
    const candidate = n === 1 ? stem : `${stem}-${n}`;
    try {
      await writeFile(join(dir, `${candidate}.json`), '{"status": "running"}\n', { flag: 'wx' });
      return candidate;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

async function main(): Promise<void> {
  const plan = readPlan();
  const started = performance.now();
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  const adapter = ctx.capabilities.adapterName;
  const stem = await reserveStem(plan.outDir, `peer-${adapterSlug(adapter)}-${fileStamp(new Date())}`);
  const command = commandLine();
  const groups = plan.presets.flatMap((preset) => plan.dtypes.map((dtype) => ({ preset, dtype })));
  const deadline = started + plan.budgetS * 1000;
  const results: CaseResult[] = [];
  const skipped: string[] = [];
  const exports: Record<string, unknown>[] = [];
  const picks: string[] = [];
  log(`adapter ${adapter}; ${groups.length} group(s) (preset × dtype) within ~${plan.budgetS} s`);

  // 'running' after each group, 'complete' at the end, or the signal that stopped the run.
  const save = async (status: string): Promise<void> => {
    const versions = await peerVersions();
    const table = resultTable(results, plan.engines);
    const json = {
      experiment: 'peer',
      command,
      adapter,
      machine: machineInfo(),
      versions,
      onnx: { opset: ONNX_OPSET, exports },
      plan: { ...plan, maxTokens: Object.fromEntries(plan.maxTokens), ragged: Object.fromEntries(plan.ragged) },
      status,
      elapsedS: round((performance.now() - started) / 1000, 1),
      results,
      skipped,
      kernelPicks: picks,
    };
    const md = [
      '# Peer benchmark: PetServe vs ONNX Runtime on the same checkpoint',
      '',
      `- command: \`${command.npm ?? command.node}\``,
      `- adapter: ${adapter}; machine: ${machineInfo().cpuModel} (${machineInfo().cpuCores} cores)`,
      `- peers: onnxruntime-web ${versions.onnxruntimeWeb ?? '-'} (WebGPU EP, same Dawn adapter), onnxruntime-node ${versions.onnxruntimeNode ?? '-'} (CPU EP); ONNX opset ${ONNX_OPSET} exported by bench/lib/onnx-export.ts`,
      `- peers get padded batches with an attention mask; PetServe packs the same batches. tokens/s counts real tokens only.`,
      `- PetServe kernels: ${plan.kernels === 'tuned' ? `self-tuned on this adapter first (src/kernels/tuner/): ${picks.join('; ')}` : 'defaults (src/kernels/tuning.ts)'}`,
      `- ragged: lognormal lengths (median ${RAGGED_MEDIAN}, σ ${RAGGED_SIGMA}, ≤ 512), the scheduler bench's long-tail mix.`,
      `- ${plan.rounds} timed round(s) per case after one untimed run (which also gives the agreement check); engines alternate within a round.`,
      `- agreement: max |Δ| over pooler output and logits vs PetServe at the same dtype; bound ${AGREEMENT_BOUND.f32} (f32), ${AGREEMENT_BOUND.f16} (f16).`,
      `- status: ${status}; elapsed ${json.elapsedS} s${skipped.length > 0 ? `; not run: ${skipped.join('; ')}` : ''}`,
      '',
      markdownTable(table),
      '',
    ].join('\n');
    await writeReport(plan.outDir, stem, json, md);
  };

  // A run stopped by a time limit (scripts/gpu-check.sh uses `timeout`) still
  // leaves the cases it measured.
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: writing the cases measured so far`);
    void save(`interrupted by ${signal}`).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);

  for (const [g, { preset, dtype }] of groups.entries()) {
    // Each group gets an equal share of what is left; a group that starts runs
    // at least its first case (one-time costs such as pipeline compilation
    // would otherwise starve every group on a slow device).
    const leftMs = deadline - performance.now();
    if (leftMs <= 0) {
      skipped.push(`${preset} ${dtype} (all cases: --budget-s ${plan.budgetS} spent)`);
      continue;
    }
    const groupDeadline = performance.now() + leftMs / (groups.length - g);
    const dir = await mkdtemp(join(tmpdir(), `petserve-peer-${preset}-`));
    try {
      log(`${preset} ${dtype}: writing a random checkpoint`);
      await initModel({ preset, outDir: dir, numLabels: 2, seed: 1 });
      const ck = await loadCheckpoint(dir);
      const { cases, skipped: gridSkipped } = casesFor(plan, preset, ck);
      skipped.push(...gridSkipped.map((s) => `${preset} ${dtype} ${s}`));
      const onnx = exportBertOnnx(ck, dtype);
      exports.push({ preset, dtype, bytes: onnx.bytes.length, nodes: onnx.nodeCount, ops: [...new Set(onnxOpTypes(onnx.bytes))] });
      log(`${preset} ${dtype}: ONNX model ${(onnx.bytes.length / 2 ** 20).toFixed(1)} MiB, ${onnx.nodeCount} nodes`);

      const runner = await ModelRunner.create(ctx, ck, { dtype, logger: silentLogger });
      if (plan.kernels === 'tuned') {
        const tuned = await tuneKernels(ctx, runner.tuneWorkload(), runner.kernels, { exclusive: (w) => runner.exclusive(w) });
        runner.kernels = tuned.choices;
        const pick = `gemm ${gemmChoiceName(tuned.choices.gemm)}, attention ${attentionChoiceName(tuned.choices.attention)}, rows wg${tuned.choices.rowWorkgroupSize}`;
        picks.push(`${preset} ${dtype}: ${pick} (tuned in ${(tuned.elapsedMs / 1000).toFixed(1)} s)`);
        log(`${preset} ${dtype}: kernels tuned: ${pick}`);
      }
      const peers: PeerEngine[] = [];
      try {
        const runners = new Map<EngineId, CaseRunner>([['petserve', petServeRunner(runner)]]);
        const addPeer = async (id: EngineId, make: () => Promise<PeerEngine>): Promise<void> => {
          if (!plan.engines.includes(id)) return;
          const t0 = performance.now();
          const engine = await make();
          peers.push(engine);
          runners.set(id, peerRunner(engine));
          log(`${preset} ${dtype}: ${ENGINE_LABEL[id]} session ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        };
        await addPeer('ort-webgpu', () => createOrtWebGpuEngine(onnx.bytes, adapter));
        await addPeer('ort-cpu', () => createOrtCpuEngine(onnx.bytes));
        for (const c of cases) {
          if (c !== cases[0] && performance.now() > groupDeadline) {
            skipped.push(`${preset} ${dtype} ${c.label} (its share of --budget-s ${plan.budgetS} spent)`);
            continue;
          }
          log(`${preset} ${dtype} ${c.label}: ${c.realTokens} tokens (${c.paddedTokens} padded)`);
          const r = await measureCase(c, runners, plan.rounds, { preset, dtype });
          results.push(r);
          const summary = plan.engines.map((e) => `${ENGINE_LABEL[e]} ${fmt(r.engines[e]?.tokensPerSecond.median, 0)}`).join(', ');
          log(`  tokens/s: ${summary}; max |Δ| ${JSON.stringify(r.maxAbsDiff)}`);
        }
      } finally {
        for (const p of peers) await p.dispose();
        await runner.dispose();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    await save('running');
  }
  await save('complete');
  ctx.destroy();
  console.log(textTable(resultTable(results, plan.engines)));
  if (skipped.length > 0) console.log(`not run: ${skipped.join('; ')}`);
  console.log(`wrote ${join(plan.outDir, stem)}.{json,md}`);
  if (results.some((r) => !r.agrees)) {
    console.error('[peer] outputs disagree beyond the bound in at least one case (see the agree column)');
    process.exitCode = 1;
  }
}

await main();
// onnxruntime-web keeps worker threads and Dawn keeps its instance alive: end explicitly.
process.exit(process.exitCode ?? 0);
