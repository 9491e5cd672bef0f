import type { BertCheckpoint } from '../model/checkpoint.js';
import { petKindModule } from './kinds/index.js';
import { PetPacker, type PackedPet } from './packed-pet.js';
import type { PetBundle } from './types.js';

/** Translate a validated bundle into tensors + attachments: its kind packs the PET, then the head. */
export function packPet(bundle: PetBundle, base: BertCheckpoint): PackedPet {
  const p = new PetPacker(base);
  petKindModule(bundle.pet.kind)!.pack(bundle.pet, p);
  if (bundle.head) {
    p.packed.head = { wOff: p.float(bundle.head.weight), bOff: p.float(bundle.head.bias), numLabels: bundle.head.bias.length };
  }
  return p.finish();
}
