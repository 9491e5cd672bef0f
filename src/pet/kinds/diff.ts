import { gemmOf, type PetPacker } from '../packed-pet.js';
import type { DiffSite } from '../types.js';

/** Diff-pruning: sparse ΔW as a CSR delta; Δb folds into the GEMM epilogue as the task's bias (b + Δb). */
export function packDiff(sites: readonly DiffSite[], p: PetPacker): void {
  for (const s of sites) {
    const { gemm, colOffset } = gemmOf(s.site, p.hidden);
    const info = p.gemmInfo(s.layer, gemm);
    const N = s.site === 'query' || s.site === 'key' || s.site === 'value' ? p.hidden : info.N;
    const { ptrOff, idxOff } = p.csr(s.indices, N, info.K);
    p.packed.sparse.push({ layer: s.layer, gemm, colOffset, K: info.K, N, ptrOff, idxOff, valOff: p.float(s.values) });
    if (s.biasDelta) {
      const base = info.baseBias.subarray(colOffset, colOffset + N);
      p.setBias(s.layer, gemm, colOffset, base.map((b, i) => b + s.biasDelta![i]!));
    }
  }
}
