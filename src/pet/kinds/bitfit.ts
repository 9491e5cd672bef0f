import type { PetTensorFile } from '../formats/common.js';
import type { BertCheckpoint } from '../../model/checkpoint.js';
import { layerNormKey } from '../packed-pet.js';
import {
  EMBEDDINGS_LAYER_NORM_MODULE,
  LAYER_NORM_SITES,
  POOLER_MODULE,
  allLinearSites,
  baseEmbeddingsLayerNorm,
  baseLayerNorm,
  baseLinear,
  basePooler,
  linearSiteDims,
  siteModule,
  type LayerNormSite,
  type LinearSite,
} from '../sites.js';
import type { PetKindModule } from './kind.js';

/** Full replacement values; absent sites keep the base values. */
export interface BitfitParams {
  biases: { layer: number; site: LinearSite; bias: Float32Array }[];
  layerNorms: { layer: number; site: LayerNormSite; gamma: Float32Array; beta: Float32Array }[];
  embeddingsLayerNorm: { gamma: Float32Array; beta: Float32Array } | null;
  poolerBias: Float32Array | null;
}

export interface BitfitSpec {
  kind: 'bitfit';
  params: BitfitParams;
}

const names = {
  bias: (module: string): string => `${module}.bias`,
  gamma: (module: string): string => `${module}.weight`,
  beta: (module: string): string => `${module}.bias`,
};

const BITFIT_SPREAD = 0.05;

/** BitFit: the task's own biases and LayerNorms, folded into epilogues and LayerNorms through the row's slot. */
export const bitfit: PetKindModule<BitfitSpec> = {
  kind: 'bitfit',
  summary: 'own biases and LayerNorm parameters (replacing the base values)',
  section: null,
  initFormat: { format: 'bundle' },
  initOptions: {},

  readBundle: ({ file, base }) => ({ kind: 'bitfit', params: readBitfit(file, base) }),

  writeBundle({ params: p }, out) {
    for (const s of p.biases) out.f32(names.bias(siteModule(out.config, s.layer, s.site)), s.bias, [s.bias.length]);
    for (const s of p.layerNorms) {
      const module = siteModule(out.config, s.layer, s.site);
      out.f32(names.gamma(module), s.gamma, [s.gamma.length]);
      out.f32(names.beta(module), s.beta, [s.beta.length]);
    }
    if (p.embeddingsLayerNorm) {
      out.f32(names.gamma(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.gamma, [out.config.hiddenSize]);
      out.f32(names.beta(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.beta, [out.config.hiddenSize]);
    }
    if (p.poolerBias) out.f32(names.bias(POOLER_MODULE), p.poolerBias, [p.poolerBias.length]);
    return undefined;
  },

  validate({ params: p }, v) {
    const H = v.config.hiddenSize;
    for (const s of p.biases) {
      const module = v.linearSite('bitfit bias', s.layer, s.site);
      v.floats(names.bias(module), s.bias, [linearSiteDims(v.config, s.site).outDim]);
    }
    for (const s of p.layerNorms) {
      const module = v.layerNormSite(s.layer, s.site);
      v.floats(names.gamma(module), s.gamma, [H]);
      v.floats(names.beta(module), s.beta, [H]);
    }
    if (p.embeddingsLayerNorm) {
      v.floats(names.gamma(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.gamma, [H]);
      v.floats(names.beta(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.beta, [H]);
    }
    if (p.poolerBias) v.floats(names.bias(POOLER_MODULE), p.poolerBias, [H]);
  },

  pack({ params }, p) {
    for (const b of params.biases) {
      const { gemm, colOffset } = p.gemmOf(b.layer, b.site);
      p.setBias(b.layer, gemm, colOffset, b.bias);
    }
    for (const ln of params.layerNorms) {
      p.packed.layerNorms.set(layerNormKey(ln.layer, ln.site), { gamma: p.float(ln.gamma), beta: p.float(ln.beta) });
    }
    const e = params.embeddingsLayerNorm;
    if (e) p.packed.layerNorms.set(layerNormKey(-1, 'embeddings'), { gamma: p.float(e.gamma), beta: p.float(e.beta) });
    if (params.poolerBias) p.setBias(-1, 'pooler', 0, params.poolerBias);
  },

  generate({ model, rng }) {
    const perturb = (values: Float32Array): Float32Array => {
      const out = rng.fillNormal(new Float32Array(values.length), 0, BITFIT_SPREAD);
      for (let i = 0; i < out.length; i++) out[i] = out[i]! + values[i]!;
      return out;
    };
    const config = model.config;
    const params: BitfitParams = { biases: [], layerNorms: [], embeddingsLayerNorm: null, poolerBias: null };
    for (const { layer, site } of allLinearSites(config)) {
      params.biases.push({ layer, site, bias: perturb(baseLinear(model, layer, site).bias) });
    }
    for (let layer = 0; layer < config.numHiddenLayers; layer++) {
      for (const site of LAYER_NORM_SITES) {
        const ln = baseLayerNorm(model, layer, site);
        params.layerNorms.push({ layer, site, gamma: perturb(ln.gamma), beta: perturb(ln.beta) });
      }
    }
    const embeddings = baseEmbeddingsLayerNorm(model);
    params.embeddingsLayerNorm = { gamma: perturb(embeddings.gamma), beta: perturb(embeddings.beta) };
    params.poolerBias = perturb(basePooler(model).bias);
    return { kind: 'bitfit', params };
  },

  checkInitOptions: () => null,

  tensors({ params: p }) {
    const arrays: ArrayBufferView[] = [];
    for (const s of p.biases) arrays.push(s.bias);
    for (const s of p.layerNorms) arrays.push(s.gamma, s.beta);
    if (p.embeddingsLayerNorm) arrays.push(p.embeddingsLayerNorm.gamma, p.embeddingsLayerNorm.beta);
    if (p.poolerBias) arrays.push(p.poolerBias);
    return arrays;
  },
};

/** BitFit values replace the base ones; a LayerNorm given by only gamma or beta keeps the base value of the other. */
function readBitfit(file: PetTensorFile, base: BertCheckpoint): BitfitParams {
  const config = base.config;
  const H = config.hiddenSize;
  const params: BitfitParams = { biases: [], layerNorms: [], embeddingsLayerNorm: null, poolerBias: null };
  for (const { layer, site, module } of allLinearSites(config)) {
    const name = names.bias(module);
    if (file.has(name)) {
      params.biases.push({ layer, site, bias: file.readFloat(name, [linearSiteDims(config, site).outDim], `bias of ${module}`) });
    }
  }
  const layerNorm = (
    module: string,
    baseValues: { gamma: Float32Array; beta: Float32Array },
  ): { gamma: Float32Array; beta: Float32Array } | null => {
    const gammaName = names.gamma(module);
    const betaName = names.beta(module);
    if (!file.has(gammaName) && !file.has(betaName)) return null;
    return {
      gamma: file.has(gammaName) ? file.readFloat(gammaName, [H], `gain of ${module}`) : baseValues.gamma.slice(),
      beta: file.has(betaName) ? file.readFloat(betaName, [H], `bias of ${module}`) : baseValues.beta.slice(),
    };
  };
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const site of LAYER_NORM_SITES) {
      const values = layerNorm(siteModule(config, layer, site), baseLayerNorm(base, layer, site));
      if (values) params.layerNorms.push({ layer, site, ...values });
    }
  }
  params.embeddingsLayerNorm = layerNorm(EMBEDDINGS_LAYER_NORM_MODULE, baseEmbeddingsLayerNorm(base));
  const poolerName = names.bias(POOLER_MODULE);
  if (file.has(poolerName)) params.poolerBias = file.readFloat(poolerName, [H], `bias of ${POOLER_MODULE}`);
  return params;
}
