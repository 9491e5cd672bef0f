// The checks every PET passes before it becomes a task (docs/pet-format.md):
// its kind's checks (kinds/<kind>.ts: sizes against the base config, finite
// values, sparse index sets, rank, bottleneck and density bounds, layer
// ranges, no site twice) and the head's labels. Importers call validatePet
// before returning, so a bundle that loads is valid; code that builds bundles
// in memory (the converter, tests) calls it too.

import type { BertConfig } from '../model/bert-config.js';
import type { BertCheckpoint } from '../model/checkpoint.js';
import { validateHead } from './head.js';
import { petKindModule } from './kinds/index.js';
import type { PetBundle } from './types.js';
import { Validator } from './validator.js';

export { MAX_SPARSE_DENSITY } from './validator.js';

/** `label` prefixes the messages (default: the bundle's source); loaders pass the file name relative to the PET directory. */
export function validatePet(bundle: PetBundle, base: BertCheckpoint, label?: string): void {
  validatePetForConfig(bundle, base.config, label);
}

/** The same checks with only the base config (what a bundle writer has). */
export function validatePetForConfig(bundle: PetBundle, config: BertConfig, label = bundle.source): void {
  const v = new Validator(label, config);
  const kind = petKindModule(bundle.pet.kind);
  if (!kind) return v.fail(`unknown PET kind '${String(bundle.pet.kind)}'`);
  kind.validate(bundle.pet, v);
  if (bundle.head) validateHead(v, bundle.head);
}
