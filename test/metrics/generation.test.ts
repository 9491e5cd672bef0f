import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { GenerationMetrics } from '../../src/metrics/generation.js';
import { promtool } from './promtool.js';

const value = (text: string, name: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
};

describe('generation metrics', () => {
  it('records TTFT, TPOT, e2e and tokens per sequence, reads running/waiting/KV state at scrape, passes promtool', async () => {
    const reg = new Registry();
    const m = new GenerationMetrics(reg);
    const state = { running: 3, waiting: 2, preempted: 1 };
    const kv = { totalBlocks: 64, usedBlocks: 10, cachedFreeBlocks: 4, prefixQueries: 40, prefixHits: 10 };
    m.bind({ scheduler: { get stats() { return state; } }, blocks: { stats: () => kv } });
    m.observer.generated({ ttftMs: 120, tpotMs: 15, e2eMs: 400, promptTokens: 12, completionTokens: 20 });
    m.observer.generated({ ttftMs: 80, tpotMs: 0, e2eMs: 80, promptTokens: 5, completionTokens: 1 });
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
});
