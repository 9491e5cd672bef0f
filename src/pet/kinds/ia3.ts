import { PetFormatError } from '../../util/errors.js';
import { gemmOf, type PetPacker } from '../packed-pet.js';
import type { Ia3Site } from '../types.js';

/**
 * IA³ (PEFT semantics) as epilogue scales:
 * - output scaling of a linear → pre-activation scale of its GEMM (after bias);
 * - input scaling of output.dense → post-GELU scale of the intermediate GEMM;
 * - input scaling of attention.output.dense → scale on the attention context.
 */
export function packIa3(sites: readonly Ia3Site[], p: PetPacker): void {
  for (const s of sites) {
    if (s.mode === 'output') {
      const { gemm, colOffset } = gemmOf(s.site, p.hidden);
      p.setPreScale(s.layer, gemm, colOffset, s.scale);
    } else if (s.site === 'output') {
      p.setPostScale(s.layer, 'intermediate', 0, s.scale);
    } else if (s.site === 'attention_output') {
      p.packed.contextScales.set(s.layer, p.float(s.scale));
    } else {
      throw new PetFormatError(`IA3 input scaling of ${s.site} (layer ${s.layer}) is not supported`);
    }
  }
}
