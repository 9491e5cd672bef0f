import { describe, expect, it } from 'vitest';
import { GenerationGateway } from '../../src/gateway/generation.js';
import type { DecoderConfig } from '../../src/model/families/decoder/types.js';
import type { GenerationRequest, GenerationResult, StepScheduler } from '../../src/scheduler/generation/step-scheduler.js';

// Which objectives a sequence runs under: the request's own, else its task's
// configured ones (the base model's under its id), else none.

function gateway(taskSlo: Record<string, { ttftMs?: number; tpotMs?: number }>): { gw: GenerationGateway; seen: GenerationRequest[] } {
  const seen: GenerationRequest[] = [];
  const scheduler = {
    submit: async (req: GenerationRequest): Promise<GenerationResult> => {
      seen.push(req);
      return { tokenIds: [], tokens: [], finishReason: 'length', promptTokens: req.promptIds.length, cachedPromptTokens: 0, ttftMs: 1, tpotMs: 0, preemptions: 0, seed: 1 };
    },
  } as unknown as StepScheduler;
  const config = { vocabSize: 50, eosTokenIds: [] } as unknown as DecoderConfig;
  const gw = new GenerationGateway({
    scheduler,
    tokenizer: null,
    config,
    hasTask: () => true,
    defaultMaxTokens: 4,
    taskSlo: (task) => taskSlo[task ?? 'base'] ?? {},
  });
  return { gw, seen };
}

describe('generation objectives', () => {
  it("a request's ttft/tpot win over its task's; a task's apply when the request names none; otherwise none", async () => {
    const { gw, seen } = gateway({ support: { ttftMs: 500, tpotMs: 80 }, base: { tpotMs: 40 } });
    const a = await gw.generate({ task: 'support', promptIds: [1, 2] });
    const b = await gw.generate({ task: 'support', promptIds: [1, 2], ttftSloMs: 50 });
    const c = await gw.generate({ task: null, promptIds: [1, 2] });
    const d = await gw.generate({ task: 'other', promptIds: [1, 2] });
    expect(seen.map((r) => [r.ttftSloMs, r.tpotSloMs])).toEqual([
      [500, 80],
      [50, 80],
      [undefined, 40],
      [undefined, undefined],
    ]);
    expect([a.slo, b.slo, c.slo, d.slo]).toEqual([{ ttftSloMs: 500, tpotSloMs: 80 }, { ttftSloMs: 50, tpotSloMs: 80 }, { tpotSloMs: 40 }, {}]);
  });
});
