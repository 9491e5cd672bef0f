import { describe, expect, it } from 'vitest';
import type { DecoderRunner } from '../../../src/engine/generation/decoder-runner.js';
import { KvBlockManager } from '../../../src/engine/generation/kv-blocks.js';
import { validateSamplingParams } from '../../../src/engine/generation/sampling.js';
import type { StepSequence } from '../../../src/engine/generation/step-inputs.js';
import { StepScheduler, type GenerationRequest } from '../../../src/scheduler/generation/step-scheduler.js';

// Admission order of online and offline sequences, with a host-only stand-in
// for the decoder (no GPU): each sequence is named by its first prompt token,
// and the runner records the order in which sequences start their prefill.

const VOCAB = 8;

function fakeRunner(admitted: number[], stepMs: number): DecoderRunner {
  const runStep = async (steps: readonly StepSequence[]): Promise<{ logits: (Float32Array | null)[]; phases: null }> => {
    for (const s of steps) if (s.startPos === 0) admitted.push(s.tokens[0]!);
    await new Promise((r) => setTimeout(r, stepMs));
    // Greedy always picks token 1.
    return { logits: steps.map((s) => (s.wantLogits ? Float32Array.from({ length: VOCAB }, (_, k) => (k === 1 ? 1 : 0)) : null)), phases: null };
  };
  // One device generation throughout (no loss); base rows only, so no pool is asked for.
  return { runStep, deviceLost: false, deviceGeneration: () => 1 } as unknown as DecoderRunner;
}

function scheduler(admitted: number[], opts: { maxOfflineWaitMs?: number; stepMs?: number } = {}): StepScheduler {
  const blocks = new KvBlockManager({ numBlocks: 64, blockTokens: 4, prefixCaching: false });
  const noAdapters = { resolve: (): never => { throw new Error('base model only'); } };
  // One sequence at a time: every admission is a decision between the waiting ones.
  return new StepScheduler(fakeRunner(admitted, opts.stepMs ?? 1), blocks, noAdapters, {
    maxStepTokens: 64,
    maxRunning: 1,
    maxWaiting: 64,
    maxContext: 64,
    ...(opts.maxOfflineWaitMs !== undefined ? { maxOfflineWaitMs: opts.maxOfflineWaitMs } : {}),
  });
}

const request = (name: number, priority: 'online' | 'offline', maxTokens = 3): GenerationRequest => ({
  taskId: null,
  promptIds: [name, 2, 3],
  maxTokens,
  sampling: validateSamplingParams({ temperature: 0 }),
  stopTokenIds: [],
  priority,
});

describe('step scheduler: online before offline', () => {
  it('an offline sequence that arrived first waits while online sequences are waiting', async () => {
    const admitted: number[] = [];
    const s = scheduler(admitted);
    const runs = [
      s.submit(request(10, 'online')),
      s.submit(request(20, 'offline')),
      s.submit(request(21, 'offline')),
      s.submit(request(30, 'online')),
      s.submit(request(31, 'online')),
    ];
    await Promise.all(runs);
    expect(admitted).toEqual([10, 30, 31, 20, 21]);
  });

  it('offline sequences alone fill the idle capacity, in arrival order', async () => {
    const admitted: number[] = [];
    const s = scheduler(admitted);
    const outs = await Promise.all([s.submit(request(20, 'offline')), s.submit(request(21, 'offline'))]);
    expect(admitted).toEqual([20, 21]);
    expect(outs.map((o) => o.finishReason)).toEqual(['length', 'length']);
  });

  it('requests without a priority are online', async () => {
    const admitted: number[] = [];
    const s = scheduler(admitted);
    const { priority: _, ...plain } = request(30, 'online');
    await Promise.all([s.submit(request(10, 'online')), s.submit(request(20, 'offline')), s.submit(plain)]);
    expect(admitted).toEqual([10, 30, 20]);
  });

  it('starvation bound: an offline sequence waiting longer than maxOfflineWaitMs is admitted like an online one', async () => {
    const admitted: number[] = [];
    // The first sequence runs 12 steps of 20 ms; the late online one arrives while it runs, and by then the offline one has waited past 30 ms.
    const s = scheduler(admitted, { maxOfflineWaitMs: 30, stepMs: 20 });
    const runs = [s.submit(request(10, 'online', 12)), s.submit(request(20, 'offline'))];
    await new Promise((r) => setTimeout(r, 50));
    runs.push(s.submit(request(30, 'online')));
    await Promise.all(runs);
    expect(admitted).toEqual([10, 20, 30]);

    // Same arrivals, a bound that is never reached: the late online sequence goes first.
    const patient: number[] = [];
    const p = scheduler(patient, { maxOfflineWaitMs: 60_000, stepMs: 20 });
    const again = [p.submit(request(10, 'online', 12)), p.submit(request(20, 'offline'))];
    await new Promise((r) => setTimeout(r, 50));
    again.push(p.submit(request(30, 'online')));
    await Promise.all(again);
    expect(patient).toEqual([10, 30, 20]);
  });
});
