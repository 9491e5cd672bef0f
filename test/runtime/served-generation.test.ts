import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32Config } from '../helpers/config.js';
import { DevicePetPool } from '../../src/pet/device-pool.js';
import { decoderUploadDir, startServedGeneration } from '../../src/runtime/served-generation.js';
import { silentLogger } from '../../src/util/logger.js';
import { decoderFixture } from '../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';

// The decoder `serve` runs: adapters uploaded through the admin API (kept in
// uploadDir/.generation) come back at the next start, in the one namespace of
// ids the encoder shares; one that no longer loads is skipped, not fatal.

const gpu: TestGpu = await createTestGpu();
let fx: Awaited<ReturnType<typeof decoderFixture>>;
let root: string;
beforeAll(async () => {
  fx = await decoderFixture('llama-tiny', [{ name: 'one', targetModules: ['q_proj', 'v_proj'], rank: 4 }]);
  root = await mkdtemp(join(tmpdir(), 'petserve-served-gen-'));
}, 60_000);
afterAll(async () => {
  fx?.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
  gpu.destroy();
});

describe('startServedGeneration', () => {
  it('registers the adapters uploaded before this start, skips a broken one, and refuses ids the encoder holds', async () => {
    const config = f32Config({ overrides: { 'generation.modelDir': fx.dir, 'generation.modelId': 'dec', 'server.uploadDir': join(root, 'uploads') } });
    const uploads = decoderUploadDir(config);
    await cp(fx.tasks.get('one')!, join(uploads, 'uploaded-one'), { recursive: true });
    await mkdir(join(uploads, 'broken'), { recursive: true });
    await writeFile(join(uploads, 'broken', 'adapter_config.json'), '{"peft_type": "LORA"');
    const pool = new DevicePetPool(gpu.ctx, 'f32', config.pets.poolBytes);
    const served = await startServedGeneration({ ctx: gpu.ctx, pool }, config, { logger: silentLogger, isEncoderModel: (id) => id === 'enc-task' });
    try {
      expect(served!.completions.serves('uploaded-one')).toBe(true);
      expect(served!.completions.serves('broken')).toBe(false);
      expect(served!.tasks.list().map((t) => t.taskId)).toEqual(['uploaded-one']);
      // One namespace: the encoder's ids and the decoder's own base are refused before any work.
      expect(() => served!.tasks.checkNewId('enc-task')).toThrow(/another model or task/);
      expect(() => served!.tasks.checkNewId('dec')).toThrow(/another model or task/);
      expect(() => served!.tasks.checkNewId('uploaded-one')).toThrow(/already registered/);
      served!.tasks.unregister('uploaded-one');
      expect(served!.completions.serves('uploaded-one')).toBe(false);
    } finally {
      await served?.close();
      pool.destroy();
    }
  }, 60_000);
});
