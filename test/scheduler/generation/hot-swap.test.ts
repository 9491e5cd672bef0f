import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32Config } from '../../helpers/config.js';
import { startGenerationRuntime, type GenerationRuntime } from '../../../src/runtime/generation-runtime.js';
import { decoderFixture } from '../../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../../helpers/gpu.js';
import { loadRefDecoder } from '../../reference/decoder-f64.js';

// Adapters come and go while the server runs: a running sequence keeps the
// registration it started with; after unregistering, new requests are refused;
// the same id registered again serves the NEW weights (no stale pool page, no
// stale prefix-cache block).

const gpu: TestGpu = await createTestGpu();
let fx: Awaited<ReturnType<typeof decoderFixture>>;
let rt: GenerationRuntime;
beforeAll(async () => {
  fx = await decoderFixture('llama-tiny', [
    { name: 'one', targetModules: ['q_proj', 'k_proj', 'v_proj'], rank: 4 },
    { name: 'two', targetModules: ['k_proj', 'v_proj', 'down_proj'], rank: 8 },
  ]);
  rt = await startGenerationRuntime(gpu.ctx, f32Config({ overrides: { 'generation.blockTokens': 4 } }), { modelDir: fx.dir });
}, 60_000);
afterAll(async () => {
  await rt?.close();
  fx?.cleanup();
  gpu.destroy();
});

const prompt = Array.from({ length: 13 }, (_, i) => (i * 19 + 4) % 400);
const run = (task: string, maxTokens = 12) => rt.gateway.generate({ task, promptIds: prompt, maxTokens, sampling: { temperature: 0 }, ignoreEos: true });

describe('hot register / unregister of decoder adapters', () => {
  it('unregistering mid-sequence lets it finish on its weights; re-registering the id serves the new weights', async () => {
    await rt.registerTask('t', fx.tasks.get('one')!);
    const refOne = loadRefDecoder(fx.dir, fx.tasks.get('one')!).greedy(prompt, 24);
    const refTwo = loadRefDecoder(fx.dir, fx.tasks.get('two')!).greedy(prompt, 12);
    expect((await run('t')).tokenIds).toEqual(refOne.slice(0, 12)); // fills the prefix cache for 't'

    let unregistered = false;
    const running = rt.gateway.generate({
      task: 't',
      promptIds: prompt,
      maxTokens: 24,
      sampling: { temperature: 0 },
      ignoreEos: true,
      onText: () => {
        if (!unregistered) {
          unregistered = true;
          rt.unregisterTask('t');
        }
      },
    });
    expect((await running).tokenIds).toEqual(refOne);
    await expect(run('t')).rejects.toMatchObject({ code: 'TASK_NOT_FOUND' });

    await rt.registerTask('t', fx.tasks.get('two')!);
    const again = await run('t');
    expect(again.cachedPromptTokens).toBe(0);
    expect(again.tokenIds).toEqual(refTwo);
    expect(rt.blocks.stats().usedBlocks).toBe(0);
    rt.blocks.checkInvariants();
  }, 120_000);

  it('unknown ids are refused on unregister, and a registered id twice', async () => {
    expect(() => rt.unregisterTask('never')).toThrow(/task 'never' is not registered/);
    await expect(rt.registerTask('t', fx.tasks.get('one')!)).rejects.toMatchObject({ code: 'TASK_EXISTS' });
  });
});
