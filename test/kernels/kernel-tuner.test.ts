import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  attentionCandidates,
  attentionChoiceName,
  gemmCandidates,
  gemmChoiceName,
  rowWorkgroupCandidates,
  smallGemmCandidates,
} from '../../src/kernels/candidates.js';
import { choiceCacheFile, choiceCacheKey, readCachedChoices, writeCachedChoices } from '../../src/kernels/tuner/choice-cache.js';
import { tuneKernels, type TuneOutcome } from '../../src/kernels/tuner/kernel-tuner.js';
import type { TuneWorkload } from '../../src/kernels/tuner/tune-workload.js';
import { defaultKernelChoices } from '../../src/kernels/tuning.js';
import type { KernelChoices } from '../../src/kernels/types.js';
import { KernelTuning, type TunableRunner } from '../../src/runtime/kernel-tuning.js';
import { silentLogger } from '../../src/util/logger.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';

const gpu: TestGpu = await createTestGpu();
// A tuning run compiles every candidate: seconds with Mesa's shader cache warm, minutes cold on two cores.
const TUNING_TIMEOUT_MS = 600_000;
let cacheDir: string;
beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), 'petserve-kernel-cache-'));
});
afterAll(async () => {
  gpu.destroy();
  await rm(cacheDir, { recursive: true, force: true });
});

// Small odd shapes: a tuning run here takes seconds on lavapipe; what is tested is the procedure.
const encoderWorkload: TuneWorkload = {
  dtype: 'f32',
  linears: [
    { N: 3 * 36, K: 36 },
    { N: 72, K: 36 },
  ],
  largeRows: 45,
  smallRows: null,
  attention: { seqLengths: [21, 9, 3], heads: 3, headDim: 12 },
  norm: { kind: 'layernorm', dim: 36 },
};
const decoderWorkload: TuneWorkload = { ...encoderWorkload, smallRows: 3, attention: null, norm: { kind: 'rmsnorm', dim: 36 } };

/** The serial queue a runner gives the tuner, counting what passes through it. */
function countingQueue(): { exclusive: <T>(fn: () => Promise<T>) => Promise<T>; calls: () => number; overlapped: () => boolean } {
  let tail: Promise<unknown> = Promise.resolve();
  let calls = 0;
  let active = 0;
  let overlapped = false;
  return {
    exclusive: <T>(fn: () => Promise<T>): Promise<T> => {
      const next = tail.then(async () => {
        calls += 1;
        active += 1;
        if (active > 1) overlapped = true;
        try {
          return await fn();
        } finally {
          active -= 1;
        }
      });
      tail = next.catch(() => undefined);
      return next;
    },
    calls: () => calls,
    overlapped: () => overlapped,
  };
}

/** The tuner's rule, restated: the fastest candidate, unless the start choice is within `minGain` of it. */
function expectedPick(o: TuneOutcome, kernel: string, startName: string, minGain: number): string {
  const timed = o.timings.filter((t) => t.kernel === kernel && t.ms !== null);
  const best = timed.reduce((a, b) => (b.ms! < a.ms! ? b : a));
  const start = timed.find((t) => t.candidate === startName);
  return start && best.ms! > start.ms! * (1 - minGain) ? startName : best.candidate;
}

describe('kernel self-tuner', () => {
  it('times every encoder candidate once per trial through the exclusive queue and picks by the stated rule', async () => {
    const q = countingQueue();
    const trials = 2;
    const o = await tuneKernels(gpu.ctx, encoderWorkload, defaultKernelChoices, { exclusive: q.exclusive, trials, minGain: 0.05 });
    const gemmNames = gemmCandidates(gpu.ctx.capabilities).map(gemmChoiceName);
    const attnNames = attentionCandidates(gpu.ctx.capabilities).map(attentionChoiceName);
    const normNames = rowWorkgroupCandidates.map((wg) => `wg${wg}`);
    expect(o.timings.filter((t) => t.kernel === 'gemm').map((t) => t.candidate)).toEqual(gemmNames);
    expect(o.timings.filter((t) => t.kernel === 'attention').map((t) => t.candidate)).toEqual(attnNames);
    expect(o.timings.filter((t) => t.kernel === 'norm').map((t) => t.candidate)).toEqual(normNames);
    expect(o.timings.some((t) => t.kernel === 'smallGemm')).toBe(false);
    for (const t of o.timings) {
      expect(t.error, `${t.kernel} ${t.candidate}`).toBeUndefined();
      expect(t.ms).toBeGreaterThan(0);
    }
    // One warm-up and `trials` timed runs per candidate, all through the queue, never two at once.
    expect(q.calls()).toBe(o.timings.length * (1 + trials));
    expect(q.overlapped()).toBe(false);
    expect(gemmChoiceName(o.choices.gemm)).toBe(expectedPick(o, 'gemm', gemmChoiceName(defaultKernelChoices.gemm), 0.05));
    expect(attentionChoiceName(o.choices.attention)).toBe(expectedPick(o, 'attention', attentionChoiceName(defaultKernelChoices.attention), 0.05));
    expect(`wg${o.choices.rowWorkgroupSize}`).toBe(expectedPick(o, 'norm', `wg${defaultKernelChoices.rowWorkgroupSize}`, 0.05));
    // Encoders have no decode steps: the small-GEMM choice is left as it was.
    expect(o.choices.smallGemm).toEqual(defaultKernelChoices.smallGemm);
  }, TUNING_TIMEOUT_MS);

  it('a decoder workload tunes the small GEMMs (subgroup variants only where the adapter has subgroups) and no packed attention', async () => {
    const q = countingQueue();
    const o = await tuneKernels(gpu.ctx, decoderWorkload, defaultKernelChoices, { exclusive: q.exclusive, trials: 1 });
    const small = o.timings.filter((t) => t.kernel === 'smallGemm').map((t) => t.candidate);
    expect(small).toEqual(smallGemmCandidates({ subgroups: gpu.ctx.capabilities.subgroups }).map(gemmChoiceName));
    expect(o.timings.some((t) => t.kernel === 'attention')).toBe(false);
    expect(o.choices.attention).toEqual(defaultKernelChoices.attention);
  }, TUNING_TIMEOUT_MS);

  it('a huge minGain keeps the start choice: the tuner never leaves it for a gain within the margin', async () => {
    const q = countingQueue();
    const o = await tuneKernels(gpu.ctx, { ...encoderWorkload, attention: null }, defaultKernelChoices, { exclusive: q.exclusive, trials: 1, minGain: 0.999 });
    expect(o.choices).toEqual(defaultKernelChoices);
  }, TUNING_TIMEOUT_MS);
});

describe('tuned choices are cached per adapter and workload', () => {
  const outcome: TuneOutcome = {
    choices: { ...defaultKernelChoices, gemm: { variant: 'tiled', bk: 8 }, rowWorkgroupSize: 128 },
    timings: [{ kernel: 'gemm', candidate: 'tiled-bk8', ms: 1.5 }],
    timer: 'timestamp',
    elapsedMs: 12,
  };

  it('reads back what it wrote, only for the same key', async () => {
    const key = choiceCacheKey('adapter A', encoderWorkload);
    await writeCachedChoices(cacheDir, key, outcome);
    expect((await readCachedChoices(cacheDir, key))?.choices).toEqual(outcome.choices);
    expect(await readCachedChoices(cacheDir, choiceCacheKey('adapter B', encoderWorkload))).toBeNull();
    expect(await readCachedChoices(cacheDir, choiceCacheKey('adapter A', { ...encoderWorkload, dtype: 'f16' }))).toBeNull();
    expect(await readCachedChoices(null, key)).toBeNull();
  });

  it('ignores a cached pick that is not a candidate any more, and a corrupt file', async () => {
    const key = choiceCacheKey('adapter C', encoderWorkload);
    const file = await writeCachedChoices(cacheDir, key, outcome);
    const entry = JSON.parse(await readFile(file, 'utf8')) as { choices: KernelChoices };
    entry.choices.gemm = { variant: 'rb', rowsPerInvocation: 3, colsPerInvocation: 4 };
    await writeFile(file, JSON.stringify(entry));
    expect(await readCachedChoices(cacheDir, key)).toBeNull();
    await writeFile(choiceCacheFile(cacheDir, key), '{ not json');
    expect(await readCachedChoices(cacheDir, key)).toBeNull();
  });
});

describe('KernelTuning (as a server runs it)', () => {
  function fakeRunner(workload: TuneWorkload): TunableRunner & { batchesRun: number } {
    const q = countingQueue();
    return { kernels: defaultKernelChoices, tuneWorkload: () => workload, exclusive: q.exclusive, batchesRun: 0 };
  }

  it('starts on the defaults without waiting, tunes in the background, applies and caches the pick; the next start reads it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'petserve-kt-'));
    try {
      const runner = fakeRunner(encoderWorkload);
      const config = { autotune: true, cacheDir: dir, startDelayMs: 60_000 };
      const t = await KernelTuning.start(gpu.ctx, runner, config, silentLogger);
      // Start returned before any trial: readiness does not wait for tuning.
      expect(t.status().state).toBe('waiting');
      expect(runner.kernels).toBe(defaultKernelChoices);
      await t.runNow();
      const s = t.status();
      expect(s.state).toBe('tuned');
      expect(s.choices.gemm).toBe(gemmChoiceName(runner.kernels.gemm));
      expect(s.gain?.['gemm']?.pickedMs).toBeGreaterThan(0);

      const again = fakeRunner(encoderWorkload);
      const t2 = await KernelTuning.start(gpu.ctx, again, config, silentLogger);
      expect(t2.status().state).toBe('cached');
      expect(again.kernels).toEqual(runner.kernels);
      await t2.stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, TUNING_TIMEOUT_MS);

  it('no trial starts while the idle probe says the scheduler is busy; tuning goes on once it is idle', async () => {
    let calls = 0;
    let busy = true;
    const runner: TunableRunner = {
      kernels: defaultKernelChoices,
      tuneWorkload: () => ({ ...encoderWorkload, attention: null }),
      exclusive: (fn) => {
        calls += 1;
        return fn();
      },
    };
    const t = await KernelTuning.start(gpu.ctx, runner, { autotune: true, cacheDir: null, startDelayMs: 60_000 }, silentLogger);
    t.setIdleProbe(() => !busy);
    const run = t.runNow();
    await new Promise((r) => setTimeout(r, 300));
    expect(calls).toBe(0);
    expect(t.status().state).toBe('tuning');
    busy = false;
    await run;
    expect(calls).toBeGreaterThan(0);
    expect(t.status().state).toBe('tuned');
  }, TUNING_TIMEOUT_MS);

  it('with autotune off and no cache it stays on the defaults', async () => {
    const runner = fakeRunner(encoderWorkload);
    const t = await KernelTuning.start(gpu.ctx, runner, { autotune: false, cacheDir: null, startDelayMs: 0 }, silentLogger);
    expect(t.status().state).toBe('defaults');
    expect(runner.kernels).toBe(defaultKernelChoices);
  });

  it('stop() before the delay has passed means no trial ever runs', async () => {
    let calls = 0;
    const runner: TunableRunner = {
      kernels: defaultKernelChoices,
      tuneWorkload: () => encoderWorkload,
      exclusive: (fn) => {
        calls += 1;
        return fn();
      },
    };
    const t = await KernelTuning.start(gpu.ctx, runner, { autotune: true, cacheDir: null, startDelayMs: 10 }, silentLogger);
    await t.stop();
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toBe(0);
    expect(runner.kernels).toBe(defaultKernelChoices);
  });
});
