/**
 * Shared pieces of the generation benchmarks (issue 13): a random decoder base
 * and random PEFT LoRA adapters in a temp dir, the request trace (Poisson
 * arrivals, Zipf adapter popularity, uniform prompt/output lengths), an
 * open-loop driver, and percentiles. Everything is seeded.
 */
import { join } from 'node:path';
import { loadConfig, type PetServeConfig } from '../../src/config/config.js';
import { DECODER_SPECIAL_TOKENS } from '../../src/model/byte-bpe.js';
import { isDecoderPresetName, type DecoderPresetName } from '../../src/model/decoder-presets.js';
import { initDecoderModel } from '../../src/model/init-decoder.js';
import { writeRandomPeftLora } from '../../src/pet/formats/peft-writer.js';
import { Rng } from '../../src/util/random.js';

export const TARGET_SETS = {
  'q/v': ['q_proj', 'v_proj'],
  'q/k/v/o': ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
  'all-linear': ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
} as const;
export type TargetSet = keyof typeof TARGET_SETS;
export const ADAPTER_RANKS = [4, 8, 16, 32, 64] as const;

export interface AdapterSpec {
  id: string;
  rank: number;
  targets: TargetSet;
  seed: number;
}

/**
 * Adapter i's rank and targets depend only on (seed, i), so the first N of a
 * larger set are the set of N: every N of a sweep shares its adapters.
 */
export function adapterSpecs(count: number, seed: number): AdapterSpec[] {
  const names = Object.keys(TARGET_SETS) as TargetSet[];
  return Array.from({ length: count }, (_, i) => {
    const rng = new Rng(seed * 100_003 + i);
    return { id: `a${i}`, rank: ADAPTER_RANKS[rng.int(0, ADAPTER_RANKS.length)]!, targets: names[rng.int(0, names.length)]!, seed: seed * 100_003 + i };
  });
}

export function presetFlag(value: string | undefined, fallback: DecoderPresetName): DecoderPresetName {
  const v = value ?? fallback;
  if (!isDecoderPresetName(v)) throw new Error(`--preset must be a decoder preset name, got ${v}`);
  return v;
}

/** A random base checkpoint in `dir`; returns its vocab size. */
export async function makeDecoderBase(preset: DecoderPresetName, dir: string): Promise<{ vocabSize: number; parameterCount: number }> {
  const r = await initDecoderModel({ preset, outDir: dir, seed: 1 });
  return { vocabSize: r.vocabSize, parameterCount: r.parameterCount };
}

/** Write the adapters under `root`; task id → directory. */
export async function writeAdapters(modelDir: string, root: string, specs: readonly AdapterSpec[]): Promise<Map<string, string>> {
  const dirs = new Map<string, string>();
  for (const s of specs) {
    const dir = join(root, s.id);
    await writeRandomPeftLora(dir, { modelDir, rank: s.rank, alpha: 2 * s.rank, targetModules: [...TARGET_SETS[s.targets]], seed: s.seed });
    dirs.set(s.id, dir);
  }
  return dirs;
}

export interface TraceRequest {
  /** Offset from the start of the run. */
  arrivalMs: number;
  promptIds: number[];
  maxTokens: number;
  /** Adapter index by popularity (0 = most popular); the trace per N maps it to a task id. */
  adapter: number;
}

export interface TraceSpec {
  requests: number;
  ratePerS: number;
  promptTokens: [number, number];
  outputTokens: [number, number];
  vocabSize: number;
  seed: number;
}

/**
 * Arrivals and lengths are drawn from their own streams and do not depend on
 * the adapter count: every N (and the base-only run) sees the same arrivals,
 * prompts and output lengths; only which adapter a request names changes.
 */
export function makeTrace(spec: TraceSpec, adapters: number): TraceRequest[] {
  const arrivals = new Rng(spec.seed);
  const lengths = new Rng(spec.seed + 1);
  const tokens = new Rng(spec.seed + 2);
  const pick = zipfSampler(adapters, 1.0, new Rng(spec.seed * 7919 + adapters));
  // Keep prompts off the special tokens (they sit after the BPE vocabulary).
  const plainVocab = spec.vocabSize - DECODER_SPECIAL_TOKENS.length;
  const out: TraceRequest[] = [];
  let t = 0;
  for (let i = 0; i < spec.requests; i++) {
    t += -Math.log(1 - arrivals.next()) * (1000 / spec.ratePerS);
    const p = lengths.int(spec.promptTokens[0], spec.promptTokens[1] + 1);
    const o = lengths.int(spec.outputTokens[0], spec.outputTokens[1] + 1);
    out.push({ arrivalMs: t, promptIds: Array.from({ length: p }, () => tokens.int(0, plainVocab)), maxTokens: o, adapter: pick() });
  }
  return out;
}

/** Zipf(s) over n items: P(i) ∝ 1/(i+1)^s, by inverse CDF. */
export function zipfSampler(n: number, s: number, rng: Rng): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1) ** s;
  return () => {
    const u = rng.next() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function rangeFlag(value: string | undefined, fallback: [number, number], name: string): [number, number] {
  if (value === undefined) return fallback;
  const m = /^(\d+)-(\d+)$/.exec(value);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < Number(m[1])) throw new Error(`${name} must be lo-hi (integers, 1 <= lo <= hi), got ${value}`);
  return [Number(m[1]), Number(m[2])];
}

export function listFlag(value: string | undefined, fallback: number[], name: string): number[] {
  if (value === undefined) return fallback;
  const xs = value.split(',').map(Number);
  if (xs.length === 0 || xs.some((x) => !Number.isSafeInteger(x) || x < 1)) throw new Error(`${name} must be a comma-separated list of positive integers, got ${value}`);
  return xs;
}

/** The server's config with the benchmark's generation settings (no env, no file: runs are reproducible). */
export function benchGenerationConfig(generation: Partial<PetServeConfig['generation']>, poolBytes?: number): PetServeConfig {
  const base = loadConfig({ env: {} });
  // f32 pinned: 'auto' would let a start-up probe decide, and every system must run the same dtype.
  return { ...base, model: { ...base.model, dtype: 'f32' }, generation: { ...base.generation, ...generation }, pets: { ...base.pets, ...(poolBytes !== undefined ? { poolBytes } : {}) } };
}

export interface RequestOutcome {
  /** Wall ms from the scheduled arrival to the first token (queueing included). */
  ttftMs: number;
  tpotMs: number;
  completionTokens: number;
  /** From the run's start to this request's end. */
  endMs: number;
}

/**
 * Open loop: request i is submitted at its arrival time whatever the system's
 * state (arrivals do not wait for answers). `submit` resolves with the
 * request's TTFT measured from when it was handed over, plus its TPOT.
 */
export async function runOpenLoop(
  trace: readonly TraceRequest[],
  submit: (req: TraceRequest, index: number) => Promise<{ ttftMs: number; tpotMs: number; completionTokens: number }>,
  onDone?: (done: number) => void,
): Promise<{ outcomes: RequestOutcome[]; makespanMs: number }> {
  const t0 = performance.now();
  let done = 0;
  const outcomes = await Promise.all(
    trace.map(async (req, i): Promise<RequestOutcome> => {
      const wait = req.arrivalMs - (performance.now() - t0);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const handedOver = performance.now();
      const r = await submit(req, i);
      const end = performance.now();
      onDone?.(++done);
      // Timer lateness (the event loop busy with a step) counts as queueing.
      return { ttftMs: handedOver - t0 - req.arrivalMs + r.ttftMs, tpotMs: r.tpotMs, completionTokens: r.completionTokens, endMs: end - t0 };
    }),
  );
  return { outcomes, makespanMs: Math.max(...outcomes.map((o) => o.endMs)) };
}

/** The "how to run" section every generation benchmark report ends with. */
export const GEN_BENCH_COMMANDS = [
  '## The generation benchmarks (issue 13)',
  '',
  '- `npm run bench -- gen-adapters [--adapters 1,8,64,512] [--rate 20] [--requests 100 | --seconds 5] [--prompt 8-64] [--output 8-32] [--preset llama-bench] [--systems a,b,c,d] [--seed 13]`: ' +
    'the same Poisson/Zipf trace through (a) merged models swapped per adapter, (b) unmerged one adapter per step, (c) ours (all adapters in one continuous batch), (d) base model only; tokens/s, req/s, TTFT/TPOT p50/p99, GPU memory, the issue\'s targets as PASS/FAIL. ~10 min here; `--quick` (N = 1, 64; 24 requests) ~1 min.',
  '- `npm run bench -- gen-decode [--batches 1,8,32] [--steps 24] [--prompt 16] [--preset llama-bench]`: decode tokens/s and ms/step with B sequences decoding together, base vs one adapter per sequence, and device time per operator from steps profiled per dispatch. `--quick`: B = 1, 8.',
  '- `npm run bench -- gen-kv [--requests 96] [--rate 16] [--adapters 8] [--preset llama-bench]`: KV blocks in use vs tokens held after every step, waste per sequence (≤ 1 block: PASS/FAIL), prefix caching on and off. `--quick`: 24 requests.',
  '',
  'All take `--out <dir>` (default bench/results) and write `<name>-<adapter>-<UTC stamp>.{json,md,svg}`. Set `XDG_RUNTIME_DIR` when running on Dawn/lavapipe headless.',
].join('\n');
