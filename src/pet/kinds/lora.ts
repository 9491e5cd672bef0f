import { z } from 'zod';

import { patternKeyFor } from '../formats/match.js';
import { requireBoth } from '../formats/common.js';
import { allLinearSites, linearSiteDims, siteModule, type LinearSite } from '../sites.js';
import type { PetKindModule } from './kind.js';

/** ΔY = scale · (X·Aᵀ)·Bᵀ */
export interface LoraSite {
  layer: number;
  site: LinearSite;
  rank: number;
  scale: number;
  /** [rank, in] */
  a: Float32Array;
  /** [out, rank] */
  b: Float32Array;
}

export interface LoraSpec {
  kind: 'lora';
  sites: LoraSite[];
}

const section = z.strictObject({
  alpha: z.number(),
  use_rslora: z.boolean().default(false),
  alpha_pattern: z.record(z.string(), z.number()).default({}),
});
type LoraSection = z.infer<typeof section>;

const names = {
  a: (module: string): string => `${module}.lora_A.weight`,
  b: (module: string): string => `${module}.lora_B.weight`,
};

export const LORA_DEFAULT_RANK = 8;
// PEFT's usual pairing lora_alpha = 2r, i.e. scale 2.
const LORA_ALPHA_PER_RANK = 2;
// Size of ‖s·B·A·x‖ relative to ‖W·x‖ at each site. With A ~ N(0, 1/in),
// ‖A·x‖ ≈ ‖x‖·√(r/in), so B ~ N(0, σ) gives a ratio s·σ·√(r/in) / σ_W;
// σ is solved from it. 0.3 per site moves bert-tiny's pooled output by ~4%.
const LORA_RELATIVE_DELTA = 0.3;

/** LoRA: a low-rank delta per linear site, run as a segmented shrink + expand before the site's GEMM. */
export const lora: PetKindModule<LoraSpec, LoraSection> = {
  kind: 'lora',
  summary: 'low-rank delta ΔW = s·B·A on linear layers',
  section: { schema: section, required: true },
  // PEFT target_modules as users write them for BERT; 'output.dense' also selects attention.output.dense.
  initFormat: { format: 'peft', targetModules: ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'] },
  initOptions: { rank: `rank (default ${LORA_DEFAULT_RANK})` },

  readBundle({ section, file, base, manifestPath }) {
    const config = base.config;
    const sites: LoraSite[] = [];
    for (const { layer, site, module } of allLinearSites(config)) {
      const aName = names.a(module);
      const bName = names.b(module);
      if (!file.has(aName) && !file.has(bName)) continue;
      requireBoth(file, aName, bName);
      const { outDim, inDim } = linearSiteDims(config, site);
      const a = file.readFloat(aName, [null, inDim], `lora_A of ${module} is [r, in] = [r, ${inDim}]`);
      const rank = file.shape(aName)[0]!;
      const b = file.readFloat(bName, [outDim, rank], `lora_B of ${module} is [out, r] with r = ${rank} from lora_A`);
      const key = patternKeyFor(section!.alpha_pattern, module, `${manifestPath}: lora.alpha_pattern`);
      const alpha = key === undefined ? section!.alpha : section!.alpha_pattern[key]!;
      sites.push({ layer, site, rank, scale: alpha / (section!.use_rslora ? Math.sqrt(rank) : rank), a, b });
    }
    return { kind: 'lora', sites };
  },

  writeBundle(spec, out) {
    // One alpha for the task, per-module overrides where a site's scale differs.
    const alphaOf = (s: LoraSite): number => s.scale * s.rank;
    const alpha = spec.sites.length > 0 ? alphaOf(spec.sites[0]!) : 1;
    const alphaPattern: Record<string, number> = {};
    for (const s of spec.sites) {
      const module = siteModule(out.config, s.layer, s.site);
      const { outDim, inDim } = linearSiteDims(out.config, s.site);
      out.f32(names.a(module), s.a, [s.rank, inDim]);
      out.f32(names.b(module), s.b, [outDim, s.rank]);
      if (alphaOf(s) !== alpha) alphaPattern[module] = alphaOf(s);
    }
    return { alpha, use_rslora: false, alpha_pattern: alphaPattern };
  },

  validate(spec, v) {
    for (const s of spec.sites) {
      const module = v.linearSite('lora', s.layer, s.site);
      const { outDim, inDim } = linearSiteDims(v.config, s.site);
      const maxRank = Math.min(inDim, outDim);
      if (!Number.isInteger(s.rank) || s.rank < 1 || s.rank > maxRank) {
        v.fail(`LoRA rank ${s.rank} of ${module} is outside 1..${maxRank} (min(in, out) of a [${outDim}, ${inDim}] weight)`);
      }
      if (!Number.isFinite(s.scale)) v.fail(`LoRA scale ${s.scale} of ${module} is not finite`);
      v.floats(names.a(module), s.a, [s.rank, inDim]);
      v.floats(names.b(module), s.b, [outDim, s.rank]);
    }
  },

  pack(spec, p) {
    for (const s of spec.sites) {
      const { gemm, colOffset } = p.gemmOf(s.layer, s.site);
      const K = s.a.length / s.rank;
      const N = s.b.length / s.rank;
      p.packed.lowRank.push({ layer: s.layer, gemm, colOffset, K, N, rank: s.rank, aOff: p.float(s.a), bOff: p.float(s.b), scale: s.scale });
    }
  },

  generate({ model, rng, options }) {
    const config = model.config;
    const rank = options.rank ?? LORA_DEFAULT_RANK;
    const scale = LORA_ALPHA_PER_RANK;
    const sites: LoraSite[] = [];
    for (const { layer, site } of allLinearSites(config)) {
      const { outDim, inDim } = linearSiteDims(config, site);
      const bStd = (LORA_RELATIVE_DELTA * config.initializerRange * Math.sqrt(inDim / rank)) / scale;
      const a = rng.fillNormal(new Float32Array(rank * inDim), 0, 1 / Math.sqrt(inDim));
      const b = rng.fillNormal(new Float32Array(outDim * rank), 0, bStd);
      sites.push({ layer, site, rank, scale, a, b });
    }
    return { kind: 'lora', sites };
  },

  checkInitOptions({ rank }, config) {
    const maxRank = Math.min(config.hiddenSize, config.intermediateSize);
    if (rank !== undefined && (!Number.isInteger(rank) || rank < 1 || rank > maxRank)) {
      return `rank must be an integer in 1..${maxRank} (min(in, out) over the sites), got ${rank}`;
    }
    return null;
  },

  tensors: (spec) => spec.sites.flatMap((s) => [s.a, s.b]),
};
