import { allLinearSites, linearSiteDims, siteModule, type LinearSite } from '../sites.js';
import { checkDensity, randomIndexSet } from '../sparse.js';
import type { PetKindModule } from './kind.js';

/** Y = X·(W⊙M)ᵀ + b; `removed` = flat indices where M = 0, strictly increasing. */
export interface MaskSite {
  layer: number;
  site: LinearSite;
  removed: Int32Array;
}

export interface MaskSpec {
  kind: 'mask';
  sites: MaskSite[];
}

const removedName = (module: string): string => `${module}.weight.mask_removed`;

export const MASK_DEFAULT_DENSITY = 0.1;

/** MaskBERT: Y = X·(W⊙M)ᵀ + b = shared op − X·(W⊙¬M)ᵀ; only the removed positions are stored. */
export const mask: PetKindModule<MaskSpec> = {
  kind: 'mask',
  summary: 'binary mask over the weights of linear layers (removed positions stored)',
  section: null,
  initFormat: { format: 'bundle' },
  initOptions: { density: `fraction removed (default ${MASK_DEFAULT_DENSITY})` },

  readBundle({ file, base }) {
    const sites: MaskSite[] = [];
    for (const { layer, site, module } of allLinearSites(base.config)) {
      const name = removedName(module);
      if (!file.has(name)) continue;
      sites.push({ layer, site, removed: file.readIndices(name, `flat indices row·in + col into ${module}.weight`) });
    }
    return { kind: 'mask', sites };
  },

  writeBundle(spec, out) {
    for (const s of spec.sites) out.i32(removedName(siteModule(out.config, s.layer, s.site)), s.removed);
    return undefined;
  },

  validate(spec, v) {
    for (const s of spec.sites) {
      const module = v.linearSite('mask', s.layer, s.site);
      const { outDim, inDim } = linearSiteDims(v.config, s.site);
      v.sparseIndices(removedName(module), s.removed, outDim * inDim, `[${outDim}, ${inDim}]`);
    }
  },

  pack(spec, p) {
    for (const s of spec.sites) {
      const { gemm, colOffset, N, K } = p.linearSite(s.layer, s.site);
      const { ptrOff, idxOff } = p.csr(s.removed, N, K);
      p.packed.sparse.push({ layer: s.layer, gemm, colOffset, K, N, ptrOff, idxOff, valOff: null, nnz: s.removed.length });
    }
  },

  generate({ model, rng, options }) {
    const density = options.density ?? MASK_DEFAULT_DENSITY;
    const sites: MaskSite[] = [];
    for (const { layer, site } of allLinearSites(model.config)) {
      const { outDim, inDim } = linearSiteDims(model.config, site);
      sites.push({ layer, site, removed: randomIndexSet(rng, outDim * inDim, density) });
    }
    return { kind: 'mask', sites };
  },

  checkInitOptions: ({ density }) => checkDensity(density),

  tensors: (spec) => spec.sites.map((s) => s.removed),
};
