import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { TaskRegistry } from '../../src/pet/registry.js';
import { PetFormatError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { makeTinyBase, rejection, writeBundleFixture, writePeftFixture, type TinyBase } from './formats-helpers.js';

/**
 * Issue 16, point 7: a refused PET's message (PET_INVALID, sent to API
 * clients as a 422) names files relative to the task directory, never the
 * absolute path where the server keeps its tasks. Each case is registered as
 * the server registers an upload: TaskRegistry.register(id, absoluteDir).
 */
let t: TinyBase;
let registry: TaskRegistry;

beforeAll(async () => {
  t = await makeTinyBase('error-paths');
  registry = new TaskRegistry(t.base, { logger: silentLogger });
});
afterAll(() => t.cleanup());

const H = 128;
const manifest = (kind: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  format: 'petserve-pet',
  version: 1,
  kind,
  ...extra,
});
const loraConfig = { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['query'] };

/** Each case builds a broken PET directory under `dir` and says which file (relative) the message must name. */
const CASES: { name: string; file: string | null; make: (dir: string) => Promise<unknown> }[] = [
  { name: 'missing directory', file: null, make: async () => {} },
  { name: 'a file, not a directory', file: null, make: (dir) => writeFile(dir, 'x') },
  { name: 'neither manifest', file: null, make: (dir) => mkdir(dir, { recursive: true }) },
  {
    name: 'both manifests',
    file: null,
    make: async (dir) => {
      await writeBundleFixture(dir, manifest('mask'), {});
      await writeFile(join(dir, 'adapter_config.json'), '{}');
    },
  },
  {
    name: 'pet.json is not JSON',
    file: 'pet.json',
    make: async (dir) => {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'pet.json'), '{ nope');
    },
  },
  { name: 'pet.json with a wrong format', file: 'pet.json', make: (dir) => writeBundleFixture(dir, { ...manifest('mask'), format: 'x' }, {}) },
  {
    name: 'pet.safetensors missing',
    file: 'pet.safetensors',
    make: async (dir) => {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'pet.json'), JSON.stringify(manifest('mask')));
    },
  },
  {
    name: 'pet.safetensors is garbage',
    file: 'pet.safetensors',
    make: async (dir) => {
      await writeBundleFixture(dir, manifest('mask'), {});
      await writeFile(join(dir, 'pet.safetensors'), Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]));
    },
  },
  {
    name: 'a tensor of the wrong shape',
    file: 'pet.safetensors',
    make: (dir) =>
      writeBundleFixture(dir, manifest('bitfit'), { 'encoder.layer.0.attention.self.query.bias': { shape: [H + 1], data: new Float32Array(H + 1) } }),
  },
  {
    name: 'a tensor no kind reads',
    file: 'pet.safetensors',
    make: (dir) => writeBundleFixture(dir, manifest('mask'), { 'something.else': { shape: [1], data: new Float32Array(1) } }),
  },
  {
    name: 'indices that fail validation (not increasing)',
    file: 'pet.safetensors',
    make: (dir) =>
      writeBundleFixture(dir, manifest('mask'), {
        'encoder.layer.0.attention.self.query.weight.mask_removed': { shape: [2], data: Int32Array.from([5, 3]) },
      }),
  },
  {
    name: 'adapter_config.json with an unknown peft_type',
    file: 'adapter_config.json',
    make: (dir) => writePeftFixture(dir, { peft_type: 'PREFIX_TUNING' }, {}),
  },
  {
    name: 'adapter_model.safetensors missing',
    file: 'adapter_model.safetensors',
    make: async (dir) => {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(loraConfig));
    },
  },
  {
    name: 'a LoRA tensor of the wrong rank',
    file: 'adapter_model.safetensors',
    make: (dir) =>
      writePeftFixture(dir, loraConfig, {
        'base_model.model.encoder.layer.0.attention.self.query.lora_A.weight': { shape: [3, H], data: new Float32Array(3 * H) },
        'base_model.model.encoder.layer.0.attention.self.query.lora_B.weight': { shape: [H, 3], data: new Float32Array(3 * H) },
        'base_model.model.encoder.layer.1.attention.self.query.lora_A.weight': { shape: [2, H], data: new Float32Array(2 * H) },
        'base_model.model.encoder.layer.1.attention.self.query.lora_B.weight': { shape: [H, 2], data: new Float32Array(2 * H) },
      }),
  },
];

describe('PET_INVALID messages name files relative to the task directory', () => {
  CASES.forEach((c, i) => {
    it(c.name, async () => {
      const dir = join(t.root, 'tasks', `case-${i}`);
      await mkdir(join(t.root, 'tasks'), { recursive: true });
      await c.make(dir);
      const err = await rejection(() => registry.register(`case-${i}`, dir));
      expect(err).toBeInstanceOf(PetFormatError);
      expect((err as PetFormatError).code).toBe('PET_INVALID');
      expect(err.message).not.toContain(t.root);
      expect(err.message).not.toContain(tmpdir());
      expect(err.message, 'no absolute path of any kind').not.toMatch(/(^|[\s'"(])\/[\w.-]+\//);
      if (c.file !== null) expect(err.message, 'names the file it refused').toContain(c.file);
      expect(registry.has(`case-${i}`), 'a refused PET leaves no task behind').toBe(false);
    });
  });
});
