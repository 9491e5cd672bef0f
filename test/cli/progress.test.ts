import { describe, expect, it } from 'vitest';
import { formatSeconds, startPhasedProgress, startProgress, type ProgressStream } from '../../src/cli/progress.js';

/** A stream double that records what is written; isTTY as given. */
function recorder(isTTY: boolean): ProgressStream & { text: () => string } {
  const chunks: string[] = [];
  return {
    isTTY,
    columns: 120,
    write(chunk: string) {
      chunks.push(chunk);
      return true;
    },
    text: () => chunks.join(''),
  };
}

const ESC = '\x1b';

describe('startProgress, plain mode (output not a terminal)', () => {
  it('writes a first line, then at most one line per interval, and a last line at stop', () => {
    let t = 0;
    const stream = recorder(false);
    const p = startProgress({ label: 'job', total: 100, initial: { done: 0, failed: 0 }, stream, plainIntervalMs: 1000, now: () => t, mode: 'plain' });
    t = 400;
    p.update({ done: 10, failed: 0 }); // not due: 400 ms after the first line
    t = 1000;
    p.update({ done: 20, failed: 1 }); // due
    t = 1500;
    p.update({ done: 30, failed: 1 }); // not due
    t = 2000;
    p.update({ done: 39, failed: 1 }); // due
    t = 2500;
    p.stop();
    p.update({ done: 99 }); // after stop: ignored
    p.stop();
    const lines = stream.text().trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toBe('job: 0/100 (done 0, failed 0), - items/s, ETA ?, 0s elapsed');
    // The rate runs from the first change (10 at 400 ms): 11 more in 0.6 s, 79 left.
    expect(lines[1]).toBe('job: 21/100 (done 20, failed 1), 18.3 items/s, ETA 4s, 1s elapsed');
    expect(lines[2]).toBe('job: 40/100 (done 39, failed 1), 18.8 items/s, ETA 3s, 2s elapsed');
    // The last line's rate is over the whole run: 40 in 2.5 s.
    expect(lines[3]).toBe('job: 40/100 (done 39, failed 1), 16.0 items/s, finished in 3s');
    expect(stream.text()).not.toContain(ESC);
  });

  it('counts only what settles after the start, so a wait joined half-way has a true ETA', () => {
    let t = 0;
    const stream = recorder(false);
    const p = startProgress({ label: 'b', total: 100, initial: { done: 50 }, unit: 'runs', stream, plainIntervalMs: 1000, now: () => t, mode: 'plain' });
    t = 5000;
    p.update({ done: 55 });
    t = 15_000;
    p.update({ done: 65 });
    p.stop();
    // 10 runs in the 10 s since the first change (not 65 in 15 s): 35 left -> 35 s.
    expect(stream.text()).toContain('b: 55/100, - runs/s, ETA ?, 5s elapsed');
    expect(stream.text()).toContain('b: 65/100, 1.00 runs/s, ETA 35s, 15s elapsed');
  });

  it('increment counts done units and a note follows the counts', () => {
    let t = 0;
    const stream = recorder(false);
    const p = startProgress({ label: 'gen', total: 3, unit: 'tensors', stream, plainIntervalMs: 10, now: () => t, mode: 'plain' });
    t = 1000;
    p.increment();
    t = 2000;
    p.increment(2);
    p.update({ done: 3, note: 'writing' });
    p.stop();
    expect(stream.text().trimEnd().split('\n')).toEqual([
      'gen: 0/3, - tensors/s, ETA ?, 0s elapsed',
      'gen: 1/3, - tensors/s, ETA ?, 1s elapsed',
      'gen: 3/3, 2.00 tensors/s, ETA 0s, 2s elapsed',
      'gen: 3/3, 1.50 tensors/s, finished in 2s, writing',
    ]);
  });

  it('time-boxed work (endsAtMs) counts without a total and takes its ETA from the clock', () => {
    let t = 0;
    const stream = recorder(false);
    const p = startProgress({ label: 'load', total: 0, unit: 'requests', endsAtMs: 30_000, stream, plainIntervalMs: 10_000, now: () => t, mode: 'plain' });
    t = 1000;
    p.increment(5);
    t = 10_000;
    p.increment(90);
    p.stop();
    expect(stream.text().trimEnd().split('\n')).toEqual([
      'load: 0, - requests/s, ETA 30s, 0s elapsed',
      'load: 95, 10.0 requests/s, ETA 20s, 10s elapsed',
      'load: 95, 9.50 requests/s, finished in 10s',
    ]);
  });

  it('auto mode is plain when the stream is not a terminal', () => {
    const stream = recorder(false);
    const p = startProgress({ label: 'x', total: 2, stream });
    p.update({ done: 1 });
    p.stop();
    expect(stream.text()).not.toContain(ESC);
    expect(stream.text().trimEnd().split('\n').at(-1)).toMatch(/^x: 1\/2, .*finished in/);
  });

  it('with showAfterMs, quick work writes nothing and slow work starts its lines once that time has passed', () => {
    let t = 0;
    const quick = recorder(false);
    const q = startProgress({ label: 'q', total: 4, stream: quick, showAfterMs: 1000, now: () => t, mode: 'plain' });
    t = 300;
    q.update({ done: 4 });
    q.stop();
    expect(quick.text()).toBe('');

    t = 0;
    const slow = recorder(false);
    const p = startProgress({ label: 's', total: 4, stream: slow, showAfterMs: 1000, plainIntervalMs: 500, now: () => t, mode: 'plain' });
    t = 900;
    p.update({ done: 1 });
    expect(slow.text()).toBe('');
    t = 1000;
    p.update({ done: 2 });
    t = 1200;
    p.update({ done: 3 }); // within the interval after the first line
    t = 2000;
    p.stop();
    expect(slow.text().trimEnd().split('\n')).toEqual(['s: 2/4, 10.0 items/s, ETA 0s, 1s elapsed', 's: 3/4, 1.50 items/s, finished in 2s']);
  });

  it('log() writes its message as a line of its own', () => {
    let t = 0;
    const stream = recorder(false);
    const p = startProgress({ label: 'k', total: 2, stream, plainIntervalMs: 1000, now: () => t, mode: 'plain' });
    p.log('gemm 128x768x768 rb: 9.1 GFLOP/s');
    t = 1000;
    p.increment();
    p.stop();
    p.log('after');
    expect(stream.text().trimEnd().split('\n')).toEqual([
      'k: 0/2, - items/s, ETA ?, 0s elapsed',
      'gemm 128x768x768 rb: 9.1 GFLOP/s',
      'k: 1/2, - items/s, ETA ?, 1s elapsed',
      'k: 1/2, 1.00 items/s, finished in 1s',
      'after',
    ]);
  });

  it('off mode writes nothing', () => {
    const stream = recorder(false);
    const p = startProgress({ label: 'x', total: 2, stream, mode: 'off' });
    p.increment();
    p.stop();
    expect(stream.text()).toBe('');
  });
});

describe('startProgress, live mode (a terminal)', () => {
  it('redraws one line with counts, rate and ETA on the given stream only', () => {
    let t = 0;
    const stream = recorder(true);
    const p = startProgress({ label: 'batch b1', total: 10, stream, now: () => t, mode: 'live' });
    p.update({ done: 0, failed: 0 });
    t = 2000;
    p.update({ done: 3, failed: 1 });
    t = 3000;
    p.update({ done: 5, failed: 1 });
    p.stop();
    const text = stream.text();
    expect(text).toContain(ESC); // cursor control from cli-progress, not plain lines
    expect(text).toContain('batch b1 [');
    expect(text).toContain('6/10 (done 5, failed 1) | 2.00 items/s | finished in 3s');
  });

  it('prints log() messages above the line, before its last drawing', () => {
    let t = 0;
    const stream = recorder(true);
    const p = startProgress({ label: 'bench', total: 2, stream, now: () => t, mode: 'live' });
    t = 1000;
    p.increment();
    p.log('first measurement: 12.5 GFLOP/s');
    t = 2000;
    p.increment();
    p.stop();
    const text = stream.text();
    const message = text.indexOf('first measurement: 12.5 GFLOP/s\n');
    expect(message).toBeGreaterThanOrEqual(0);
    expect(text.lastIndexOf('bench [')).toBeGreaterThan(message);
    expect(text).toContain('2/2 | 1.00 items/s | finished in 2s');
  });
});

describe('startProgress, live mode with showAfterMs', () => {
  it('draws nothing for work that ends before the delay', () => {
    let t = 0;
    const stream = recorder(true);
    const p = startProgress({ label: 'x', total: 3, stream, showAfterMs: 1000, now: () => t, mode: 'live' });
    t = 500;
    p.update({ done: 3 });
    p.stop();
    expect(stream.text()).toBe('');
  });
});

describe('startPhasedProgress', () => {
  it('gives each phase its own line, ending the previous one when the next phase reports', () => {
    let t = 0;
    const stream = recorder(false);
    const p = startPhasedProgress((phase: 'generate' | 'write') => `ckpt ${phase}`, { stream, unit: 'tensors', plainIntervalMs: 1000, now: () => t, mode: 'plain' });
    t = 1000;
    p.report('generate', 2, 2);
    p.report('write', 1, 2);
    t = 2000;
    p.report('write', 2, 2);
    p.stop();
    // Each phase is timed from when the one before it last reported: generating began at 0, writing at 1000.
    expect(stream.text().trimEnd().split('\n')).toEqual([
      'ckpt generate: 0/2, - tensors/s, ETA ?, 1s elapsed',
      'ckpt generate: 2/2, 2.00 tensors/s, finished in 1s',
      'ckpt write: 0/2, - tensors/s, ETA ?, 0s elapsed',
      'ckpt write: 2/2, 1.00 tensors/s, ETA 0s, 1s elapsed',
      'ckpt write: 2/2, 2.00 tensors/s, finished in 1s',
    ]);
  });
});

describe('formatSeconds', () => {
  it('reads as s, m:ss and h:mm', () => {
    expect([formatSeconds(0), formatSeconds(59.4), formatSeconds(65), formatSeconds(3725)]).toEqual(['0s', '59s', '1m05s', '1h02m']);
  });
});
