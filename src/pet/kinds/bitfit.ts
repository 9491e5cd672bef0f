import { gemmOf, layerNormKey, type PetPacker } from '../packed-pet.js';
import type { BitfitParams } from '../types.js';

/** BitFit: the task's own biases and LayerNorms, folded into epilogues through the row's slot. */
export function packBitfit(params: BitfitParams, p: PetPacker): void {
  for (const b of params.biases) {
    const { gemm, colOffset } = gemmOf(b.site, p.hidden);
    p.setBias(b.layer, gemm, colOffset, b.bias);
  }
  for (const ln of params.layerNorms) {
    p.packed.layerNorms.set(layerNormKey(ln.layer, ln.site), { gamma: p.float(ln.gamma), beta: p.float(ln.beta) });
  }
  const e = params.embeddingsLayerNorm;
  if (e) p.packed.layerNorms.set(layerNormKey(-1, 'embeddings'), { gamma: p.float(e.gamma), beta: p.float(e.beta) });
  if (params.poolerBias) p.setBias(-1, 'pooler', 0, params.poolerBias);
}
