import type { BatchEncoder, EncoderResources } from '../../src/gpu/batch-encoder.js';
import { uploadStorage } from '../../src/gpu/buffers.js';
import { attention, packedKeyRanges } from '../../src/kernels/attention.js';
import { Rng } from '../../src/util/random.js';
import { chunk, lognormalLengths, normalLengths, paddedKeyRanges, summarizeLengths, type LengthSummary } from './lengths.js';
import type { QuietGate } from './cpu-load.js';
import { measureRepeated, type MeasureBudget } from './measure.js';

// bert-base attention.
const HEADS = 12;
const HEAD_DIM = 64;
const HIDDEN = HEADS * HEAD_DIM;
const MAX_LENGTH = 512;
const BYTES_PER_ELEMENT = 4; // f32

export interface LengthMix {
  name: string;
  description: string;
  lengths: number[];
}

export function lengthMixes(sequences: number, seed: number): LengthMix[] {
  return [
    {
      name: 'long-tailed',
      description: `${sequences} x lognormal(median 64, sigma 1.0) clipped to 1..${MAX_LENGTH}, seed ${seed}`,
      lengths: lognormalLengths(new Rng(seed), sequences, 64, 1.0, MAX_LENGTH),
    },
    {
      name: 'uniform',
      description: `${sequences} x N(128, 32) clipped to 1..${MAX_LENGTH}, seed ${seed + 1}`,
      lengths: normalLengths(new Rng(seed + 1), sequences, 128, 32, MAX_LENGTH),
    },
  ];
}

export interface AttentionLayoutResult {
  /** Query rows computed (each a workgroup per head). */
  tokens: number;
  /** (query, key) score pairs per head actually evaluated. */
  scorePairs: number;
  reps: number;
  timer: 'timestamp' | 'wall';
  deviceMs: number | null;
  wallMs: number;
  /** deviceMs where available, else wallMs. */
  ms: number;
  /** Share of the machine's CPU other processes used during the kept trial (0..1). */
  otherCpuShare: number;
  /** Per-repetition ms of each timed trial (the fastest is used). */
  trialMs: number[];
}

export interface AttentionResult {
  mix: string;
  description: string;
  lengths: LengthSummary;
  /** Length every sequence is padded to in the padded layout (the batch maximum). */
  paddedLength: number;
  /** Dispatches per layout: sequences are split so a padded group's qkv fits one storage binding. */
  dispatchGroups: number;
  packed: AttentionLayoutResult;
  padded: AttentionLayoutResult;
  paddedOverPacked: number;
}

/**
 * Packed vs padded attention over the same sequences. Both layouts run the
 * same kernel and pipeline (maxKeys = the batch maximum) and the same
 * dispatch grouping, so the difference is only the work padding adds.
 */
export async function benchAttention(
  res: EncoderResources,
  opts: {
    mixes: readonly LengthMix[];
    budget: MeasureBudget;
    gate: QuietGate | null;
    log: (msg: string) => void;
    /** After each measurement, two per mix (packed, padded): progress. */
    onMeasured?: () => void;
  },
): Promise<AttentionResult[]> {
  const results: AttentionResult[] = [];
  for (const mix of opts.mixes) results.push(await benchMix(res, mix, opts));
  return results;
}

async function benchMix(
  res: EncoderResources,
  mix: LengthMix,
  opts: { budget: MeasureBudget; gate: QuietGate | null; log: (msg: string) => void; onMeasured?: () => void },
): Promise<AttentionResult> {
  const device = res.ctx.device;
  const L = Math.max(...mix.lengths);
  // A padded batch of 64 x 512 tokens needs ~300 MB of f32 qkv, above the
  // 128 MiB maxStorageBufferBindingSize of many adapters (lavapipe included).
  const bindingLimit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
  const perGroup = Math.max(1, Math.floor(bindingLimit / (L * 3 * HIDDEN * BYTES_PER_ELEMENT)));
  const groups = chunk(mix.lengths, perGroup);
  const rows = Math.max(...groups.map((g) => g.length * L));

  const rng = new Rng(99);
  const qkv = uploadStorage(device, rng.fillNormal(new Float32Array(rows * 3 * HIDDEN)), `bench-attn-qkv-${mix.name}`);
  const out = uploadStorage(device, new Uint8Array(rows * HIDDEN * BYTES_PER_ELEMENT), `bench-attn-out-${mix.name}`);
  const packedRanges = groups.map((g) => uploadStorage(device, packedKeyRanges(g), 'bench-attn-packed-ranges'));
  const paddedRanges = groups.map((g) => uploadStorage(device, paddedKeyRanges(g, L), 'bench-attn-padded-ranges'));

  const runLayout = async (layout: 'packed' | 'padded'): Promise<AttentionLayoutResult> => {
    const ranges = layout === 'packed' ? packedRanges : paddedRanges;
    const tokensOf = (g: number[]): number => (layout === 'packed' ? g.reduce((a, b) => a + b, 0) : g.length * L);
    const record = (enc: BatchEncoder): void => {
      groups.forEach((g, i) => {
        attention(enc, 'f32', {
          qkv,
          keyRange: ranges[i]!,
          out,
          tokens: tokensOf(g),
          heads: HEADS,
          headDim: HEAD_DIM,
          maxKeys: L,
        }, `bench.attention.${layout}`);
      });
    };
    const m = await measureRepeated(res, record, opts.budget, opts.gate);
    const scorePairs = mix.lengths.reduce((a, len) => a + len * (layout === 'packed' ? len : L), 0);
    const tokens = groups.reduce((a, g) => a + tokensOf(g), 0);
    opts.log(`attention ${mix.name} ${layout}: ${tokens} tokens, ${m.ms.toFixed(2)} ms x ${m.reps} (wall ${m.wallMs.toFixed(2)} ms)`);
    opts.onMeasured?.();
    return { tokens, scorePairs, ...m };
  };

  try {
    const packed = await runLayout('packed');
    const padded = await runLayout('padded');
    return {
      mix: mix.name,
      description: mix.description,
      lengths: summarizeLengths(mix.lengths),
      paddedLength: L,
      dispatchGroups: groups.length,
      packed,
      padded,
      paddedOverPacked: padded.ms / packed.ms,
    };
  } finally {
    qkv.destroy();
    out.destroy();
    for (const b of [...packedRanges, ...paddedRanges]) b.destroy();
  }
}
