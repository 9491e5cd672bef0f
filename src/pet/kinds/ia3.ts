import { z } from 'zod';

import { PetFormatError } from '../../util/errors.js';
import { listNames } from '../formats/common.js';
import { INPUT_SCALE_SITES, allLinearSites, inputScaleTarget, linearSiteDims, siteModule, type LinearSite } from '../sites.js';
import type { PetKindModule } from './kind.js';

/** PEFT IA³: 'output' scales the site's output (after bias), 'input' scales its input. */
export interface Ia3Site {
  layer: number;
  site: LinearSite;
  mode: 'output' | 'input';
  scale: Float32Array;
}

export interface Ia3Spec {
  kind: 'ia3';
  sites: Ia3Site[];
}

const section = z.strictObject({ feedforward_modules: z.array(z.string()).default([]) });
type Ia3Section = z.infer<typeof section>;

const scaleName = (module: string): string => `${module}.ia3_l`;

const IA3_SPREAD = 0.1;

/**
 * IA³ (PEFT semantics) as epilogue scales:
 * - output scaling of a linear → pre-activation scale of its GEMM (after bias);
 * - input scaling of output.dense → post-GELU scale of the intermediate GEMM;
 * - input scaling of attention.output.dense → scale on the attention context.
 */
export const ia3: PetKindModule<Ia3Spec, Ia3Section> = {
  kind: 'ia3',
  summary: 'learned scaling of the outputs or inputs of linear layers',
  section: { schema: section, required: false },
  // PEFT's own defaults for BERT IA³ (TRANSFORMERS_MODELS_TO_IA3_*_MAPPING).
  initFormat: { format: 'peft', targetModules: ['key', 'value', 'output.dense'], feedforwardModules: ['output.dense'] },
  initOptions: {},

  readBundle({ section, file, base, manifestPath }) {
    const config = base.config;
    const feedforward = section?.feedforward_modules ?? [];
    const matched = new Set<string>();
    const sites: Ia3Site[] = [];
    for (const { layer, site, module } of allLinearSites(config)) {
      const name = scaleName(module);
      if (!file.has(name)) continue;
      const entry = feedforward.find((e) => module === e || module.endsWith(`.${e}`));
      if (entry !== undefined) matched.add(entry);
      const { outDim, inDim } = linearSiteDims(config, site);
      const scale =
        entry === undefined
          ? file.readFloat(name, [outDim, 1], `output scaling of ${module}, not in ia3.feedforward_modules`)
          : file.readFloat(name, [1, inDim], `input scaling of ${module}, listed in ia3.feedforward_modules as '${entry}'`);
      sites.push({ layer, site, mode: entry === undefined ? 'output' : 'input', scale });
    }
    const unmatched = feedforward.filter((e) => !matched.has(e));
    if (unmatched.length > 0) {
      throw new PetFormatError(`${manifestPath}: ia3.feedforward_modules ${listNames(unmatched)} match no IA³ tensor's module`);
    }
    return { kind: 'ia3', sites };
  },

  writeBundle(spec, out) {
    const feedforward: string[] = [];
    for (const s of spec.sites) {
      const module = siteModule(out.config, s.layer, s.site);
      out.f32(scaleName(module), s.scale, s.mode === 'input' ? [1, s.scale.length] : [s.scale.length, 1]);
      if (s.mode === 'input') feedforward.push(module);
    }
    return { feedforward_modules: feedforward };
  },

  validate(spec, v) {
    for (const s of spec.sites) {
      const module = v.linearSite('ia3', s.layer, s.site);
      const { outDim, inDim } = linearSiteDims(v.config, s.site);
      if (s.mode === 'input') {
        if (!INPUT_SCALE_SITES.includes(s.site)) {
          v.fail(
            `IA³ input scaling of ${module} is not supported: only the inputs of ` +
              `${INPUT_SCALE_SITES.join(' and ')} can be scaled (the others share their input with other sites)`,
          );
        }
        v.floats(scaleName(module), s.scale, [1, inDim]);
      } else if (s.mode === 'output') {
        v.floats(scaleName(module), s.scale, [outDim, 1]);
      } else {
        v.fail(`IA³ mode '${String(s.mode)}' of ${module} is not 'input' or 'output'`);
      }
    }
  },

  pack(spec, p) {
    for (const s of spec.sites) {
      if (s.mode === 'output') {
        const { gemm, colOffset } = p.gemmOf(s.layer, s.site);
        p.setPreScale(s.layer, gemm, colOffset, s.scale);
        continue;
      }
      const target = inputScaleTarget(s.site);
      if (target === 'attention-context') p.packed.contextScales.set(s.layer, p.float(s.scale));
      else if (target !== null) p.setPostScale(s.layer, target.gemm, target.colOffset, s.scale);
      else throw new PetFormatError(`IA3 input scaling of ${s.site} (layer ${s.layer}) is not supported`);
    }
  },

  generate({ model, rng }) {
    // The placements PEFT's BERT defaults give: key/value outputs scaled,
    // attention.output.dense and output.dense inputs scaled ('output.dense'
    // in feedforward_modules is a plain suffix and selects both).
    const sites: Ia3Site[] = [];
    for (const { layer, site } of allLinearSites(model.config)) {
      const { outDim, inDim } = linearSiteDims(model.config, site);
      if (site === 'key' || site === 'value') {
        sites.push({ layer, site, mode: 'output', scale: rng.fillNormal(new Float32Array(outDim), 1, IA3_SPREAD) });
      } else if (INPUT_SCALE_SITES.includes(site)) {
        sites.push({ layer, site, mode: 'input', scale: rng.fillNormal(new Float32Array(inDim), 1, IA3_SPREAD) });
      }
    }
    return { kind: 'ia3', sites };
  },

  checkInitOptions: () => null,

  tensors: (spec) => spec.sites.map((s) => s.scale),
};
