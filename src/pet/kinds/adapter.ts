import type { PetPacker } from '../packed-pet.js';
import type { AdapterSite } from '../types.js';

/** Houlsby adapter after a dense output: segmented down (+act) and up (+=) on the site's output rows. */
export function packAdapter(sites: readonly AdapterSite[], p: PetPacker): void {
  for (const s of sites) {
    p.packed.adapters.push({
      layer: s.layer,
      gemm: s.site,
      bottleneck: s.bottleneck,
      activation: s.activation,
      downW: p.float(s.downWeight),
      downB: p.float(s.downBias),
      upW: p.float(s.upWeight),
      upB: p.float(s.upBias),
    });
  }
}
