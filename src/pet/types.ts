/**
 * Host-side representation of a parsed, validated PET: what importers
 * produce and what the registry, the GPU pool and the batch planner consume.
 * All float data is f32 here; the pool converts to the serving dtype.
 * Each kind's spec is defined by its module (kinds/<kind>.ts); semantics:
 * docs/pet-format.md.
 */

import type { TaskHead } from './head.js';
import { petKindModule, type PetSpec } from './kinds/index.js';

export { PET_KINDS, isPetKind } from './kinds/index.js';
export type { PetKind, PetSpec } from './kinds/index.js';
export type { AdapterSite, BitfitParams, DiffSite, Ia3Site, LoraSite, MaskSite } from './kinds/index.js';
export type { LayerNormSite, LinearSite } from './sites.js';
export type { TaskHead } from './head.js';

export interface PetBundle {
  pet: PetSpec;
  head: TaskHead | null;
  /** Where it was loaded from, or what built it. */
  source: string;
  /** 'peft' (Hugging Face PEFT directory) or 'bundle' (pet.json + pet.safetensors). */
  format: 'peft' | 'bundle';
}

/** Host bytes of a bundle's tensors (f32 values, i32 indices). */
export function petHostBytes(b: PetBundle): number {
  const arrays = petKindModule(b.pet.kind)!.tensors(b.pet);
  if (b.head) arrays.push(b.head.weight, b.head.bias);
  return arrays.reduce((n, a) => n + a.byteLength, 0);
}
