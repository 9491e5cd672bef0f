import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePet } from '../../src/pet/init-pet.js';
import type { PetBundle, PetKind } from '../../src/pet/types.js';
import { PET_KINDS } from '../../src/pet/types.js';
import { validatePet } from '../../src/pet/validate.js';
import { PetFormatError } from '../../src/util/errors.js';
import { makeTinyBase } from './formats-helpers.js';
import type { TinyBase } from './formats-helpers.js';

let t: TinyBase;

beforeAll(async () => {
  t = await makeTinyBase('pet-validate');
});
afterAll(async () => t.cleanup());

function fresh(kind: PetKind): PetBundle {
  return generatePet({ model: t.base, kind, seed: 9 });
}

function expectRefused(bundle: PetBundle, message: RegExp): void {
  let error: unknown;
  try {
    validatePet(bundle, t.base);
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(PetFormatError);
  expect((error as Error).message).toMatch(message);
}

/** Narrow a bundle's PET to a kind for mutation. */
function pet<K extends PetKind>(b: PetBundle, kind: K): Extract<PetBundle['pet'], { kind: K }> {
  if (b.pet.kind !== kind) throw new Error(`expected ${kind}`);
  return b.pet as Extract<PetBundle['pet'], { kind: K }>;
}

describe('validatePet', () => {
  it.each(PET_KINDS.map((k) => [k]))('accepts a generated %s PET', (kind) => {
    expect(() => validatePet(fresh(kind), t.base)).not.toThrow();
  });

  it('NaN / Inf anywhere, named with the tensor and index', () => {
    const lora = fresh('lora');
    pet(lora, 'lora').sites[2]!.b[5] = Number.NaN;
    expectRefused(lora, /tensor 'encoder\.layer\.0\.attention\.self\.value\.lora_B\.weight' has a non-finite value \(NaN\) at index 5/);
    const bitfit = fresh('bitfit');
    pet(bitfit, 'bitfit').params.poolerBias![3] = Number.NEGATIVE_INFINITY;
    expectRefused(bitfit, /tensor 'pooler\.dense\.bias' has a non-finite value \(-Inf\) at index 3/);
    const head = fresh('mask');
    head.head!.weight[1] = Number.NaN;
    expectRefused(head, /tensor 'classifier\.weight' has a non-finite value \(NaN\) at index 1/);
  });

  it('sparse indices: in range, strictly increasing, no duplicates, density ≤ 0.5', () => {
    const outOfRange = fresh('diff');
    const site = pet(outOfRange, 'diff').sites[4]!; // layer 0 intermediate, [512, 128]
    site.indices[site.indices.length - 1] = 512 * 128;
    expectRefused(
      outOfRange,
      /'encoder\.layer\.0\.intermediate\.dense\.weight\.diff_indices' has index 65536 at position \d+, outside 0\.\.65535 of a \[512, 128\] weight/,
    );
    const negative = fresh('mask');
    pet(negative, 'mask').sites[0]!.removed[0] = -1;
    expectRefused(negative, /has index -1 at position 0/);
    const unsorted = fresh('mask');
    const r = pet(unsorted, 'mask').sites[1]!.removed;
    [r[3], r[4]] = [r[4]!, r[3]!];
    expectRefused(unsorted, /mask_removed' is not strictly increasing: index \d+ at position 4 follows \d+/);
    const duplicate = fresh('diff');
    const d = pet(duplicate, 'diff').sites[0]!.indices;
    d[1] = d[0]!;
    expectRefused(duplicate, /diff_indices' has duplicate index \d+ at positions 0 and 1/);
    const dense = fresh('mask');
    pet(dense, 'mask').sites[0]!.removed = Int32Array.from({ length: 128 * 64 + 1 }, (_, i) => i);
    expectRefused(dense, /8193 of 16384 entries \(density 0\.500\), above the 0\.5 limit/);
    const mismatch = fresh('diff');
    pet(mismatch, 'diff').sites[0]!.values = new Float32Array(1);
    expectRefused(mismatch, /diff_values' has 1 values but '.*diff_indices' has \d+ indices/);
  });

  it('LoRA rank 1..min(in, out) and matching A/B sizes; adapter bottleneck 1..H and both sites of every layer', () => {
    const rank0 = fresh('lora');
    pet(rank0, 'lora').sites[0]!.rank = 0;
    expectRefused(rank0, /LoRA rank 0 of encoder\.layer\.0\.attention\.self\.query is outside 1\.\.128/);
    const big = fresh('lora');
    Object.assign(pet(big, 'lora').sites[4]!, { rank: 129, a: new Float32Array(129 * 128), b: new Float32Array(512 * 129) });
    expectRefused(big, /LoRA rank 129 of encoder\.layer\.0\.intermediate\.dense is outside 1\.\.128 \(min\(in, out\) of a \[512, 128\] weight\)/);
    const sizes = fresh('lora');
    pet(sizes, 'lora').sites[0]!.a = new Float32Array(7);
    expectRefused(sizes, /tensor 'encoder\.layer\.0\.attention\.self\.query\.lora_A\.weight' holds 7 values, expected shape \[8, 128\] \(1024 values\)/);
    const bottleneck = fresh('adapter');
    const none = new Float32Array(0);
    Object.assign(pet(bottleneck, 'adapter').sites[0]!, { bottleneck: 0, downWeight: none, downBias: none, upWeight: none });
    expectRefused(bottleneck, /adapter bottleneck 0 of encoder\.layer\.0\.attention\.output\.adapter is outside 1\.\.128/);
    const partial = fresh('adapter');
    pet(partial, 'adapter').sites.pop();
    expectRefused(partial, /adapter is missing at encoder\.layer\.1 output/);
  });

  it('layer indices in range, no site twice, known sites', () => {
    const layer = fresh('ia3');
    pet(layer, 'ia3').sites[0]!.layer = 2;
    expectRefused(layer, /ia3 site in layer 2, but the base model has layers 0\.\.1/);
    const twice = fresh('diff');
    const sites = pet(twice, 'diff').sites;
    sites.push({ ...sites[0]! });
    expectRefused(twice, /diff site encoder\.layer\.0\.attention\.self\.query is given twice/);
    const bitfitTwice = fresh('bitfit');
    const ln = pet(bitfitTwice, 'bitfit').params.layerNorms;
    ln.push({ ...ln[0]! });
    expectRefused(bitfitTwice, /LayerNorm encoder\.layer\.0\.attention\.output\.LayerNorm is given twice/);
    const unknown = fresh('mask');
    (pet(unknown, 'mask').sites[0] as { site: string }).site = 'pooler';
    expectRefused(unknown, /mask site 'pooler' is not a linear site/);
  });

  it('IA³ input scaling only where the engine folds it; sizes follow the mode', () => {
    const query = fresh('ia3');
    Object.assign(pet(query, 'ia3').sites[0]!, { site: 'query', mode: 'input' });
    expectRefused(query, /IA³ input scaling of encoder\.layer\.0\.attention\.self\.query is not supported/);
    const size = fresh('ia3');
    pet(size, 'ia3').sites[3]!.scale = new Float32Array(128); // output site, input mode: needs I = 512
    expectRefused(size, /'encoder\.layer\.0\.output\.dense\.ia3_l' holds 128 values, expected shape \[1, 512\]/);
  });

  it('head: at least one row, weight [L, H], id2label of length L', () => {
    const labels = fresh('lora');
    labels.head!.id2label = ['only-one'];
    expectRefused(labels, /id2label has 1 labels but the classifier has 2 rows/);
    const empty = fresh('lora');
    empty.head = { weight: new Float32Array(0), bias: new Float32Array(0), id2label: [] };
    expectRefused(empty, /classifier has 0 rows; a head needs at least one label/);
    const width = fresh('lora');
    width.head!.weight = new Float32Array(2 * 64);
    expectRefused(width, /tensor 'classifier\.weight' holds 128 values, expected shape \[2, 128\] \(256 values\)/);
  });
});
