import { describe, expect, it } from 'vitest';
import type { DecoderRunner } from '../../../src/engine/generation/decoder-runner.js';
import { KvBlockManager } from '../../../src/engine/generation/kv-blocks.js';
import { validateSamplingParams } from '../../../src/engine/generation/sampling.js';
import type { StepSequence } from '../../../src/engine/generation/step-inputs.js';
import { StepScheduler, type GenerationRequest } from '../../../src/scheduler/generation/step-scheduler.js';

// Generation objectives with a host-only stand-in for the decoder (no GPU): a
// step costs `msPerRow` per row, sequences are named by their first prompt token.

const VOCAB = 8;

function fakeRunner(log: { admitted: number[]; stepRows: number[][] }, msPerRow: number): DecoderRunner {
  const runStep = async (steps: readonly StepSequence[]): Promise<{ logits: (Float32Array | null)[]; phases: null }> => {
    for (const s of steps) if (s.startPos === 0) log.admitted.push(s.tokens[0]!);
    const rows = steps.reduce((n, s) => n + s.tokens.length, 0);
    log.stepRows.push(steps.map((s) => s.tokens.length));
    await new Promise((r) => setTimeout(r, msPerRow * rows));
    return { logits: steps.map((s) => (s.wantLogits ? Float32Array.from({ length: VOCAB }, (_, k) => (k === 1 ? 1 : 0)) : null)), phases: null };
  };
  // One device generation throughout (no loss); base rows only, so no pool is asked for.
  return { runStep, deviceLost: false, deviceGeneration: () => 1 } as unknown as DecoderRunner;
}

function scheduler(log: { admitted: number[]; stepRows: number[][] }, opts: { maxRunning: number; msPerRow: number }): StepScheduler {
  const blocks = new KvBlockManager({ numBlocks: 256, blockTokens: 4, prefixCaching: false });
  const noAdapters = { resolve: (): never => { throw new Error('base model only'); } };
  return new StepScheduler(fakeRunner(log, opts.msPerRow), blocks, noAdapters, { maxStepTokens: 256, maxRunning: opts.maxRunning, maxWaiting: 64, maxContext: 512 });
}

const request = (name: number, extra: Partial<GenerationRequest> = {}, promptLength = 3, maxTokens = 3): GenerationRequest => ({
  taskId: null,
  promptIds: [name, ...Array.from({ length: promptLength - 1 }, () => 2)],
  maxTokens,
  sampling: validateSamplingParams({ temperature: 0 }),
  stopTokenIds: [],
  ...extra,
});

describe('step scheduler: generation objectives', () => {
  it('TTFT: waiting sequences are admitted earliest deadline first; without objectives in arrival order', async () => {
    const log = { admitted: [] as number[], stepRows: [] as number[][] };
    const s = scheduler(log, { maxRunning: 1, msPerRow: 2 });
    await Promise.all([
      s.submit(request(10)),
      s.submit(request(20)),
      s.submit(request(30, { ttftSloMs: 500 })),
      s.submit(request(40, { ttftSloMs: 100 })),
      s.submit(request(50)),
    ]);
    // 10 is running when the rest arrive; then 40 (deadline +100), 30 (+500), then 20 and 50 (default 10 s, arrival order).
    expect(log.admitted).toEqual([10, 40, 30, 20, 50]);
  });

  it('TPOT: while a sequence with an objective decodes, prefill of a long prompt is cut into steps that fit it', async () => {
    for (const tpot of [undefined, 12] as const) {
      const log = { admitted: [] as number[], stepRows: [] as number[][] };
      const s = scheduler(log, { maxRunning: 4, msPerRow: 1 });
      const decoder = s.submit(request(10, tpot === undefined ? {} : { tpotSloMs: tpot }, 3, 40));
      await new Promise((r) => setTimeout(r, 30)); // 10 is decoding (the per-row cost is measured by now)
      const long = s.submit(request(20, {}, 120, 2));
      await Promise.all([decoder, long]);
      // Steps in which 10 decoded while 20's prompt was being computed.
      const mixed = log.stepRows.filter((rows) => rows.length === 2 && rows[1]! > 1);
      const biggest = Math.max(...log.stepRows.map((rows) => rows.reduce((a, b) => a + b, 0)));
      if (tpot === undefined) {
        expect(biggest, 'no objective: the whole prompt in one step').toBeGreaterThanOrEqual(120);
      } else {
        expect(mixed.length, 'the prompt is spread over several steps').toBeGreaterThan(3);
        // Measured cost ≥ 1 ms per row, so no step may exceed 12 rows once 10 decodes.
        expect(Math.max(...mixed.map((rows) => rows[0]! + rows[1]!))).toBeLessThanOrEqual(12);
      }
    }
  });
});
