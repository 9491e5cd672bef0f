import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { adapterOpClass, GenerationMetrics } from '../../src/metrics/generation.js';
import { promtool } from './promtool.js';

const value = (text: string, name: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
};

describe('generation metrics', () => {
  it('counts sequences with an objective by objective and outcome; sequences without one are not counted', async () => {
    const reg = new Registry();
    const m = new GenerationMetrics(reg);
    m.observer.generated({ task: 'a', ttftMs: 120, tpotMs: 15, e2eMs: 400, promptTokens: 4, completionTokens: 9, ttftSloMs: 100, tpotSloMs: 20 });
    m.observer.generated({ task: 'a', ttftMs: 90, tpotMs: 25, e2eMs: 400, promptTokens: 4, completionTokens: 9, ttftSloMs: 100, tpotSloMs: 20 });
    m.observer.generated({ task: null, ttftMs: 900, tpotMs: 99, e2eMs: 900, promptTokens: 4, completionTokens: 9 });
    const text = await reg.metrics();
    const count = (labels: string): number => value(text, `petserve_generation_slo_total{${labels}}`);
    expect(count('objective="ttft",outcome="met"')).toBe(1);
    expect(count('objective="ttft",outcome="missed"')).toBe(1);
    expect(count('objective="tpot",outcome="met"')).toBe(1);
    expect(count('objective="tpot",outcome="missed"')).toBe(1);
  });

  it('records TTFT, TPOT, e2e and tokens per sequence, reads running/waiting/KV state at scrape, passes promtool', async () => {
    const reg = new Registry();
    const m = new GenerationMetrics(reg);
    const state = { running: 3, waiting: 2, preempted: 1 };
    const kv = { totalBlocks: 64, usedBlocks: 10, cachedFreeBlocks: 4, prefixQueries: 40, prefixHits: 10 };
    m.bind({ scheduler: { get stats() { return state; } }, blocks: { stats: () => kv } });
    m.observer.generated({ task: 'qv-r4', ttftMs: 120, tpotMs: 15, e2eMs: 400, promptTokens: 12, completionTokens: 20 });
    m.observer.generated({ task: null, ttftMs: 80, tpotMs: 0, e2eMs: 80, promptTokens: 5, completionTokens: 1 });
    m.onStep({ decodeRows: 3, prefillRows: 0, sequences: 3, adapters: 2, wallMs: 9, phases: null, running: 3, waiting: 2, preempted: 1 });

    let text = await reg.metrics();
    expect(value(text, 'petserve_generation_ttft_seconds_count')).toBe(2);
    // A one-token sequence has no inter-token time.
    expect(value(text, 'petserve_generation_inter_token_seconds_count')).toBe(1);
    expect(value(text, 'petserve_generation_inter_token_seconds_sum')).toBeCloseTo(0.015, 10);
    expect(value(text, 'petserve_generation_e2e_seconds_count')).toBe(2);
    expect(value(text, 'petserve_generation_step_seconds_count')).toBe(1);
    expect(value(text, 'petserve_generation_prompt_tokens_total')).toBe(17);
    expect(value(text, 'petserve_generation_generated_tokens_total')).toBe(21);
    expect(value(text, 'petserve_generation_running_sequences')).toBe(3);
    expect(value(text, 'petserve_generation_waiting_sequences')).toBe(2);
    expect(value(text, 'petserve_generation_preempted_total')).toBe(1);
    expect(value(text, 'petserve_generation_kv_blocks_used')).toBe(10);
    expect(value(text, 'petserve_generation_kv_blocks_capacity')).toBe(64);
    expect(value(text, 'petserve_generation_prefix_cache_hit_ratio')).toBe(0.25);

    state.preempted = 4;
    text = await reg.metrics();
    expect(value(text, 'petserve_generation_preempted_total')).toBe(4);
    const r = promtool(['check', 'metrics'], text);
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
  });

  it('takes the LoRA device share from profiled steps only: adapter dispatches over all dispatch time', async () => {
    const reg = new Registry();
    const m = new GenerationMetrics(reg);
    const step = { decodeRows: 2, prefillRows: 0, sequences: 2, adapters: 2, wallMs: 5, running: 2, waiting: 0, preempted: 0 };
    m.onStep({ ...step, phases: null });
    expect(value(await reg.metrics(), 'petserve_generation_lora_device_share')).toBeNaN();
    const phases = [
      { name: 'embed', ms: 1 },
      { name: 'task_embed', ms: 0.5 },
      { name: 'l0.q', ms: 3 },
      { name: 'l0.q.ia3_in', ms: 0.25 },
      { name: 'l0.q.lora_shrink', ms: 0.5 },
      { name: 'l0.q.lora_expand', ms: 0.5 },
      { name: 'l0.down.ia3_out', ms: 0.25 },
      { name: 'l0.attention', ms: 2 },
      { name: 'lm_head', ms: 2 },
      { name: 'task_heads', ms: 1 },
    ];
    m.onStep({ ...step, phases });
    m.onStep({ ...step, phases });
    // Adapter ops: 0.5 + 0.25 + 1 + 0.25 + 1 = 3 ms of 11 ms per step.
    expect(value(await reg.metrics(), 'petserve_generation_lora_device_share')).toBeCloseTo(3 / 11, 10);
    expect(m.deviceShare()?.steps).toBe(2);
    expect(adapterOpClass('l3.attention')).toBeNull();
    expect(adapterOpClass('l3.up.lora_expand')).toBe('lora');
  });

  it('builds the status section: state at call time, recent TTFT/TPOT percentiles, sequences per decoder task', () => {
    const m = new GenerationMetrics(new Registry());
    m.bind({
      scheduler: { stats: { running: 1, waiting: 4, preempted: 2 } },
      blocks: { stats: () => ({ totalBlocks: 100, usedBlocks: 25, cachedFreeBlocks: 3, prefixQueries: 0, prefixHits: 0 }) },
    });
    for (let i = 1; i <= 100; i++) m.observer.generated({ task: i % 4 === 0 ? 'b' : 'a', ttftMs: i, tpotMs: i / 10, e2eMs: 10 * i, promptTokens: 4, completionTokens: 3 });
    const s = m.status([{ id: 'a', kind: 'lora' }, { id: 'b', kind: 'ia3' }, { id: 'c', kind: 'lora' }]);
    expect(s).toMatchObject({ running: 1, waiting: 4, preemptedTotal: 2, kvBlocksUsed: 25, kvBlocksCapacity: 100, prefixCacheHitRatio: null });
    expect(s.ttft.requests).toBe(100);
    expect(s.ttft.p50Ms).toBeGreaterThanOrEqual(49);
    expect(s.ttft.p50Ms).toBeLessThanOrEqual(52);
    expect(s.ttft.p99Ms).toBeGreaterThanOrEqual(98);
    expect(s.tpot.p99Ms).toBeCloseTo(s.ttft.p99Ms! / 10, 10);
    expect(s.ttft.tokensPerSecond).toBeGreaterThan(0);
    expect(s.tasks).toEqual([
      { id: 'a', kind: 'lora', sequences: 75 },
      { id: 'b', kind: 'ia3', sequences: 25 },
      { id: 'c', kind: 'lora', sequences: 0 },
    ]);
  });
});
