import type { BertCheckpoint } from '../model/checkpoint.js';
import { packAdapter } from './kinds/adapter.js';
import { packBitfit } from './kinds/bitfit.js';
import { packDiff } from './kinds/diff.js';
import { packIa3 } from './kinds/ia3.js';
import { packLora } from './kinds/lora.js';
import { packMask } from './kinds/mask.js';
import { PetPacker, type PackedPet } from './packed-pet.js';
import type { PetBundle } from './types.js';

/** Translate a validated bundle into tensors + attachments (one kind module per PET kind). */
export function packPet(bundle: PetBundle, base: BertCheckpoint): PackedPet {
  const p = new PetPacker(base);
  const pet = bundle.pet;
  switch (pet.kind) {
    case 'lora':
      packLora(pet.sites, p);
      break;
    case 'adapter':
      packAdapter(pet.sites, p);
      break;
    case 'diff':
      packDiff(pet.sites, p);
      break;
    case 'mask':
      packMask(pet.sites, p);
      break;
    case 'bitfit':
      packBitfit(pet.params, p);
      break;
    case 'ia3':
      packIa3(pet.sites, p);
      break;
  }
  if (bundle.head) {
    p.packed.head = { wOff: p.float(bundle.head.weight), bOff: p.float(bundle.head.bias), numLabels: bundle.head.bias.length };
  }
  return p.finish();
}
