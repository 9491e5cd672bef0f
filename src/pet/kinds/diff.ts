import type { PetPacker } from '../packed-pet.js';
import type { DiffSite } from '../types.js';

/** Diff-pruning: sparse ΔW as a CSR delta; Δb folds into the GEMM epilogue as the task's bias (b + Δb). */
export function packDiff(sites: readonly DiffSite[], p: PetPacker): void {
  for (const s of sites) {
    const { gemm, colOffset, N, K, baseBias } = p.linearSite(s.layer, s.site);
    const { ptrOff, idxOff } = p.csr(s.indices, N, K);
    p.packed.sparse.push({ layer: s.layer, gemm, colOffset, K, N, ptrOff, idxOff, valOff: p.float(s.values), nnz: s.indices.length });
    if (s.biasDelta) {
      const delta = s.biasDelta;
      p.setBias(s.layer, gemm, colOffset, baseBias.map((b, i) => b + delta[i]!));
    }
  }
}
