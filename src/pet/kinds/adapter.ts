import { z } from 'zod';

import { PetFormatError } from '../../util/errors.js';
import { ADAPTER_SITES, adapterModule, type AdapterSiteName } from '../sites.js';
import type { PetKindModule } from './kind.js';

/** h ← h + W_up·act(W_down·h + b_down) + b_up, applied to the site's output before residual + LayerNorm. */
export interface AdapterSite {
  layer: number;
  site: AdapterSiteName;
  bottleneck: number;
  activation: 'relu' | 'gelu';
  /** [bottleneck, H] */
  downWeight: Float32Array;
  /** [bottleneck] */
  downBias: Float32Array;
  /** [H, bottleneck] */
  upWeight: Float32Array;
  /** [H] */
  upBias: Float32Array;
}

export interface AdapterSpec {
  kind: 'adapter';
  sites: AdapterSite[];
}

const positiveInt = z.number().int().positive();
const section = z.strictObject({ bottleneck: positiveInt, activation: z.enum(['relu', 'gelu']) });
type AdapterSection = z.infer<typeof section>;

const tensorName = (layer: number, site: AdapterSiteName, part: 'down' | 'up', param: 'weight' | 'bias'): string =>
  `${adapterModule(layer, site)}.${part}.${param}`;

export const ADAPTER_DEFAULT_BOTTLENECK = 16;
const ADAPTER_STD = 0.05;

/** Houlsby bottleneck adapters after both adapter sites of every layer: segmented down (+act) and up (+=) on the site's output rows. */
export const adapter: PetKindModule<AdapterSpec, AdapterSection> = {
  kind: 'adapter',
  summary: 'bottleneck adapters after the attention and feed-forward outputs of every layer',
  section: { schema: section, required: true },
  initFormat: { format: 'bundle' },
  initOptions: { bottleneck: `bottleneck width (default ${ADAPTER_DEFAULT_BOTTLENECK})` },

  readBundle({ section, file, base }) {
    const { bottleneck, activation } = section!;
    const config = base.config;
    const H = config.hiddenSize;
    const sites: AdapterSite[] = [];
    for (let layer = 0; layer < config.numHiddenLayers; layer++) {
      for (const site of ADAPTER_SITES) {
        const name = (part: 'down' | 'up', param: 'weight' | 'bias'): string => tensorName(layer, site, part, param);
        const why = `adapter bottleneck ${bottleneck} from pet.json, hidden size ${H}; adapters sit at both sites of every layer`;
        sites.push({
          layer,
          site,
          bottleneck,
          activation,
          downWeight: file.readFloat(name('down', 'weight'), [bottleneck, H], why),
          downBias: file.readFloat(name('down', 'bias'), [bottleneck], why),
          upWeight: file.readFloat(name('up', 'weight'), [H, bottleneck], why),
          upBias: file.readFloat(name('up', 'bias'), [H], why),
        });
      }
    }
    return { kind: 'adapter', sites };
  },

  writeBundle(spec, out) {
    const first = spec.sites[0]!;
    const odd = spec.sites.find((s) => s.bottleneck !== first.bottleneck || s.activation !== first.activation);
    if (odd) {
      throw new PetFormatError(
        `${out.source}: a bundle holds one adapter bottleneck and activation per task, but ` +
          `encoder.layer.${odd.layer} ${odd.site} has (${odd.bottleneck}, ${odd.activation}) and ` +
          `encoder.layer.${first.layer} ${first.site} has (${first.bottleneck}, ${first.activation})`,
      );
    }
    const H = out.config.hiddenSize;
    for (const s of spec.sites) {
      out.f32(tensorName(s.layer, s.site, 'down', 'weight'), s.downWeight, [s.bottleneck, H]);
      out.f32(tensorName(s.layer, s.site, 'down', 'bias'), s.downBias, [s.bottleneck]);
      out.f32(tensorName(s.layer, s.site, 'up', 'weight'), s.upWeight, [H, s.bottleneck]);
      out.f32(tensorName(s.layer, s.site, 'up', 'bias'), s.upBias, [H]);
    }
    return { bottleneck: first.bottleneck, activation: first.activation };
  },

  validate(spec, v) {
    const H = v.config.hiddenSize;
    for (const s of spec.sites) {
      v.layer('adapter', s.layer);
      if (!ADAPTER_SITES.includes(s.site)) {
        v.fail(`adapter site '${String(s.site)}' is not supported (adapters sit after ${ADAPTER_SITES.join(' and ')})`);
      }
      v.once(`adapter at encoder.layer.${s.layer} ${s.site}`);
      const where = adapterModule(s.layer, s.site);
      if (!Number.isInteger(s.bottleneck) || s.bottleneck < 1 || s.bottleneck > H) {
        v.fail(`adapter bottleneck ${s.bottleneck} of ${where} is outside 1..${H} (the hidden size)`);
      }
      if (s.activation !== 'relu' && s.activation !== 'gelu') {
        v.fail(`adapter activation '${String(s.activation)}' of ${where} is not supported (relu or gelu)`);
      }
      v.floats(tensorName(s.layer, s.site, 'down', 'weight'), s.downWeight, [s.bottleneck, H]);
      v.floats(tensorName(s.layer, s.site, 'down', 'bias'), s.downBias, [s.bottleneck]);
      v.floats(tensorName(s.layer, s.site, 'up', 'weight'), s.upWeight, [H, s.bottleneck]);
      v.floats(tensorName(s.layer, s.site, 'up', 'bias'), s.upBias, [H]);
    }
    // The engine inserts adapters at both sites of every layer (PetS placement).
    for (let layer = 0; layer < v.config.numHiddenLayers; layer++) {
      for (const site of ADAPTER_SITES) {
        if (!spec.sites.some((s) => s.layer === layer && s.site === site)) {
          v.fail(`adapter is missing at encoder.layer.${layer} ${site}: adapters must sit at both sites of every layer`);
        }
      }
    }
  },

  pack(spec, p) {
    for (const s of spec.sites) {
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
  },

  generate({ model, rng, options }) {
    const m = options.bottleneck ?? ADAPTER_DEFAULT_BOTTLENECK;
    const H = model.config.hiddenSize;
    const sites: AdapterSite[] = [];
    for (let layer = 0; layer < model.config.numHiddenLayers; layer++) {
      for (const site of ADAPTER_SITES) {
        sites.push({
          layer,
          site,
          bottleneck: m,
          activation: 'gelu',
          downWeight: rng.fillNormal(new Float32Array(m * H), 0, ADAPTER_STD),
          downBias: rng.fillNormal(new Float32Array(m), 0, ADAPTER_STD),
          upWeight: rng.fillNormal(new Float32Array(H * m), 0, ADAPTER_STD),
          upBias: rng.fillNormal(new Float32Array(H), 0, ADAPTER_STD),
        });
      }
    }
    return { kind: 'adapter', sites };
  },

  checkInitOptions({ bottleneck }, config) {
    if (bottleneck !== undefined && (!Number.isInteger(bottleneck) || bottleneck < 1 || bottleneck > config.hiddenSize)) {
      return `bottleneck must be an integer in 1..${config.hiddenSize} (the hidden size), got ${bottleneck}`;
    }
    return null;
  },

  tensors: (spec) => spec.sites.flatMap((s) => [s.downWeight, s.downBias, s.upWeight, s.upBias]),
};
