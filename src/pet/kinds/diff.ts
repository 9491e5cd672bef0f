import { requireBoth } from '../formats/common.js';
import { allLinearSites, linearSiteDims, siteModule, type LinearSite } from '../sites.js';
import { checkDensity, randomIndexSet } from '../sparse.js';
import type { PetKindModule } from './kind.js';

/** ΔY = X·ΔWᵀ + Δb with ΔW sparse (flat indices row·in + col, strictly increasing). */
export interface DiffSite {
  layer: number;
  site: LinearSite;
  indices: Int32Array;
  values: Float32Array;
  /** [out] or null */
  biasDelta: Float32Array | null;
}

export interface DiffSpec {
  kind: 'diff';
  sites: DiffSite[];
}

const names = {
  indices: (module: string): string => `${module}.weight.diff_indices`,
  values: (module: string): string => `${module}.weight.diff_values`,
  bias: (module: string): string => `${module}.bias.diff`,
};

export const DIFF_DEFAULT_DENSITY = 0.01;
const DIFF_VALUE_STD = 0.02;

/** Diff-pruning: sparse ΔW as a CSR delta; Δb folds into the GEMM epilogue as the task's bias (b + Δb). */
export const diff: PetKindModule<DiffSpec> = {
  kind: 'diff',
  summary: 'sparse weight delta ΔW (+ bias delta) on linear layers',
  section: null,
  initFormat: { format: 'bundle' },
  initOptions: { density: `fraction of each weight changed (default ${DIFF_DEFAULT_DENSITY})` },

  readBundle({ file, base }) {
    const config = base.config;
    const sites: DiffSite[] = [];
    for (const { layer, site, module } of allLinearSites(config)) {
      const indicesName = names.indices(module);
      const valuesName = names.values(module);
      const biasName = names.bias(module);
      const hasWeightDiff = file.has(indicesName) || file.has(valuesName);
      if (!hasWeightDiff && !file.has(biasName)) continue;
      let indices: Int32Array = new Int32Array(0);
      let values: Float32Array = new Float32Array(0);
      if (hasWeightDiff) {
        requireBoth(file, indicesName, valuesName);
        indices = file.readIndices(indicesName, `flat indices row·in + col into ${module}.weight`);
        values = file.readFloat(valuesName, [indices.length], `one value per index of '${indicesName}'`);
      }
      const { outDim } = linearSiteDims(config, site);
      const biasDelta = file.has(biasName) ? file.readFloat(biasName, [outDim], `bias delta of ${module}`) : null;
      sites.push({ layer, site, indices, values, biasDelta });
    }
    return { kind: 'diff', sites };
  },

  writeBundle(spec, out) {
    for (const s of spec.sites) {
      const module = siteModule(out.config, s.layer, s.site);
      if (s.indices.length > 0) {
        out.i32(names.indices(module), s.indices);
        out.f32(names.values(module), s.values, [s.values.length]);
      }
      if (s.biasDelta) out.f32(names.bias(module), s.biasDelta, [s.biasDelta.length]);
    }
    return undefined;
  },

  validate(spec, v) {
    for (const s of spec.sites) {
      const module = v.linearSite('diff', s.layer, s.site);
      const { outDim, inDim } = linearSiteDims(v.config, s.site);
      if (s.values.length !== s.indices.length) {
        v.fail(
          `tensor '${names.values(module)}' has ${s.values.length} values but ` +
            `'${names.indices(module)}' has ${s.indices.length} indices`,
        );
      }
      v.sparseIndices(names.indices(module), s.indices, outDim * inDim, `[${outDim}, ${inDim}]`);
      v.floats(names.values(module), s.values, [s.indices.length]);
      if (s.biasDelta !== null) v.floats(names.bias(module), s.biasDelta, [outDim]);
    }
  },

  pack(spec, p) {
    for (const s of spec.sites) {
      const { gemm, colOffset, N, K, baseBias } = p.linearSite(s.layer, s.site);
      const { ptrOff, idxOff } = p.csr(s.indices, N, K);
      p.packed.sparse.push({ layer: s.layer, gemm, colOffset, K, N, ptrOff, idxOff, valOff: p.float(s.values), nnz: s.indices.length });
      if (s.biasDelta) {
        const delta = s.biasDelta;
        p.setBias(s.layer, gemm, colOffset, baseBias.map((b, i) => b + delta[i]!));
      }
    }
  },

  generate({ model, rng, options }) {
    const density = options.density ?? DIFF_DEFAULT_DENSITY;
    const sites: DiffSite[] = [];
    for (const { layer, site } of allLinearSites(model.config)) {
      const { outDim, inDim } = linearSiteDims(model.config, site);
      const indices = randomIndexSet(rng, outDim * inDim, density);
      const values = rng.fillNormal(new Float32Array(indices.length), 0, DIFF_VALUE_STD);
      const biasDelta = rng.fillNormal(new Float32Array(outDim), 0, DIFF_VALUE_STD);
      sites.push({ layer, site, indices, values, biasDelta });
    }
    return { kind: 'diff', sites };
  },

  checkInitOptions: ({ density }) => checkDensity(density),

  tensors: (spec) => spec.sites.flatMap((s) => [s.indices, s.values, ...(s.biasDelta ? [s.biasDelta] : [])]),
};
