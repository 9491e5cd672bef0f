import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelRunner } from '../../src/engine/model-runner.js';
import type { GpuContext } from '../../src/gpu/context.js';
import { gemmChoiceName } from '../../src/kernels/candidates.js';
import type { Dtype } from '../../src/kernels/types.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import type { PresetName } from '../../src/model/presets.js';
import { silentLogger } from '../../src/util/logger.js';
import { Rng } from '../../src/util/random.js';
import { otherCpuShare, sampleCpu, type QuietGate } from './cpu-load.js';

export interface EncoderCase {
  preset: PresetName;
  sequences: number;
  seqLength: number;
}

export interface EncoderResult {
  preset: PresetName;
  dtype: Dtype;
  gemmVariant: string;
  sequences: number;
  seqLength: number;
  tokens: number;
  runs: number;
  /** Mean wall-clock time of one `runner.run` (upload, encode, submit, logits readback). */
  wallMs: number;
  /** Mean sum of the profiled phases (embeddings, every layer, heads); null without timestamps. */
  deviceMs: number | null;
  tokensPerSecond: number;
  deviceTokensPerSecond: number | null;
  /** Share of the machine's CPU other processes used during the timed runs (0..1). */
  otherCpuShare: number;
}

// First ids of a BERT vocabulary are [PAD], [unused*], [CLS], ...; stay clear of them.
const FIRST_ORDINARY_ID = 1000;

/**
 * End-to-end encoder throughput on random-weight checkpoints: one warm-up
 * run of the benchmark batch (sizes the activation arena), then timed runs
 * until `minWallMs` has passed (at least one, at most `maxRuns`).
 */
export async function benchEncoder(
  ctx: GpuContext,
  opts: {
    cases: readonly EncoderCase[];
    dtypes: readonly Dtype[];
    minWallMs: number;
    maxRuns: number;
    gate: QuietGate | null;
    log: (msg: string) => void;
    /** After each measurement, one per case and dtype (progress). */
    onMeasured?: () => void;
  },
): Promise<EncoderResult[]> {
  const results: EncoderResult[] = [];
  for (const c of opts.cases) {
    const dir = await mkdtemp(join(tmpdir(), `petserve-bench-${c.preset}-`));
    try {
      opts.log(`encoder ${c.preset}: writing a random checkpoint to ${dir}`);
      await initModel({ preset: c.preset, outDir: dir, numLabels: 2, seed: 1 });
      const checkpoint = await loadCheckpoint(dir);
      const rng = new Rng(7);
      const vocab = checkpoint.config.vocabSize;
      const inputIds = Array.from({ length: c.sequences }, () =>
        Array.from({ length: c.seqLength }, () => rng.int(Math.min(FIRST_ORDINARY_ID, vocab - 1), vocab)),
      );
      const tokens = c.sequences * c.seqLength;
      for (const dtype of opts.dtypes) {
        const runner = await ModelRunner.create(ctx, checkpoint, { dtype, logger: silentLogger });
        try {
          await runner.run({ inputIds }, { logits: true });
          let runs = 0;
          let wallTotal = 0;
          let deviceTotal: number | null = 0;
          await opts.gate?.waitForQuiet();
          const cpuBefore = sampleCpu();
          while (runs < opts.maxRuns && (runs === 0 || wallTotal < opts.minWallMs)) {
            const t0 = performance.now();
            const { phases } = await runner.run({ inputIds }, { logits: true }, { profile: true });
            wallTotal += performance.now() - t0;
            deviceTotal = phases && deviceTotal !== null ? deviceTotal + phases.reduce((a, p) => a + p.ms, 0) : null;
            runs += 1;
          }
          const otherShare = otherCpuShare(cpuBefore);
          const wallMs = wallTotal / runs;
          const deviceMs = deviceTotal !== null ? deviceTotal / runs : null;
          const result: EncoderResult = {
            preset: c.preset,
            dtype,
            gemmVariant: gemmChoiceName(runner.kernels.gemm),
            sequences: c.sequences,
            seqLength: c.seqLength,
            tokens,
            runs,
            wallMs,
            deviceMs,
            tokensPerSecond: tokens / (wallMs / 1000),
            deviceTokensPerSecond: deviceMs !== null ? tokens / (deviceMs / 1000) : null,
            otherCpuShare: otherShare,
          };
          results.push(result);
          opts.log(
            `encoder ${c.preset} ${dtype}: ${result.tokensPerSecond.toFixed(0)} tokens/s ` +
              `(${wallMs.toFixed(0)} ms wall, ${deviceMs?.toFixed(0) ?? '-'} ms device, ${runs} run(s))`,
          );
          opts.onMeasured?.();
        } finally {
          await runner.dispose();
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return results;
}
