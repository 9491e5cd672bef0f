// Shared fixtures of the PET format tests: a tiny base model in a temp
// directory, and hand-written PEFT / bundle directories.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import type { BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { writeSafetensors } from '../../src/model/safetensors.js';
import type { TensorToWrite } from '../../src/model/safetensors.js';
import type { PetBundle } from '../../src/pet/types.js';

export interface TinyBase {
  root: string;
  modelDir: string;
  base: BertCheckpoint;
  cleanup: () => Promise<void>;
}

/** bert-tiny (H 128, I 512, 2 layers), 300 tokens, 64 positions, 2 labels, in a fresh temp dir. */
export async function makeTinyBase(prefix: string): Promise<TinyBase> {
  const root = await mkdtemp(join(tmpdir(), `petserve-${prefix}-`));
  const modelDir = join(root, 'base');
  await initModel({ preset: 'bert-tiny', vocabSize: 300, maxPositions: 64, outDir: modelDir, numLabels: 2 });
  const base = await loadCheckpoint(modelDir);
  return { root, modelDir, base, cleanup: () => rm(root, { recursive: true, force: true }) };
}

export type FixtureTensor = { shape: number[]; data: Float32Array | Int32Array; dtype?: TensorToWrite['dtype'] };

export async function writeTensors(path: string, tensors: Record<string, FixtureTensor>): Promise<void> {
  const out: Record<string, TensorToWrite> = {};
  for (const [name, t] of Object.entries(tensors)) {
    out[name] = { dtype: t.dtype ?? (t.data instanceof Int32Array ? 'I32' : 'F32'), shape: t.shape, data: t.data };
  }
  await writeSafetensors(path, out, { format: 'pt' });
}

/** A PEFT directory written by hand: adapter_config.json + adapter_model.safetensors. */
export async function writePeftFixture(
  dir: string,
  config: Record<string, unknown>,
  tensors: Record<string, FixtureTensor>,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  await writeTensors(join(dir, 'adapter_model.safetensors'), tensors);
  return dir;
}

/** A PetServe bundle written by hand: pet.json + pet.safetensors. */
export async function writeBundleFixture(
  dir: string,
  manifest: Record<string, unknown>,
  tensors: Record<string, FixtureTensor>,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'pet.json'), JSON.stringify(manifest, null, 2));
  await writeTensors(join(dir, 'pet.safetensors'), tensors);
  return dir;
}

/** Two bundles hold the same PET and head, value for value. */
export function expectSameBundle(actual: PetBundle, expected: PetBundle): void {
  expect(actual.pet.kind).toBe(expected.pet.kind);
  const strip = (b: PetBundle): unknown => ({ pet: b.pet, head: b.head });
  if (actual.pet.kind === 'lora' && expected.pet.kind === 'lora') {
    // alpha is stored, scale = alpha / r is recomputed: equal up to rounding.
    expect(actual.pet.sites.map((s) => s.scale)).toEqual(expected.pet.sites.map((s) => expect.closeTo(s.scale, 12) as unknown));
    const noScale = (b: PetBundle): unknown => ({
      pet: { ...b.pet, sites: (b.pet as { sites: { scale: number }[] }).sites.map((s) => ({ ...s, scale: 0 })) },
      head: b.head,
    });
    expect(noScale(actual)).toEqual(noScale(expected));
    return;
  }
  expect(strip(actual)).toEqual(strip(expected));
}

/** The message of the error fn rejects with (fails when it resolves). */
export async function rejection(fn: () => Promise<unknown>): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection, but it resolved');
}
