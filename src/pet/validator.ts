// The checks PET kinds run on their sites before a PET becomes a task
// (docs/pet-format.md): layer ranges, no site twice, tensor sizes and finite
// values, sparse index sets. Each kind's `validate` calls these; the head and
// the dispatch over kinds are in validate.ts.

import type { BertConfig } from '../model/bert-config.js';
import { PetFormatError } from '../util/errors.js';
import { firstNonFinite, formatShape } from './formats/common.js';
import { LAYER_NORM_SITES, LINEAR_SITES, siteModule, type LayerNormSite, type LinearSite } from './sites.js';

/** Diff / mask sites may touch at most this fraction of a weight; denser deltas should be merged models. */
export const MAX_SPARSE_DENSITY = 0.5;

export class Validator {
  private readonly seen = new Set<string>();

  /** `source` prefixes every message: the file the PET came from, or what built it. */
  constructor(
    private readonly source: string,
    readonly config: BertConfig,
  ) {}

  fail(message: string): never {
    throw new PetFormatError(`${this.source}: ${message}`);
  }

  layer(what: string, layer: number): void {
    const n = this.config.numHiddenLayers;
    if (!Number.isInteger(layer) || layer < 0 || layer >= n) {
      this.fail(`${what} site in layer ${layer}, but the base model has layers 0..${n - 1}`);
    }
  }

  once(key: string): void {
    if (this.seen.has(key)) this.fail(`${key} is given twice`);
    this.seen.add(key);
  }

  linearSite(what: string, layer: number, site: LinearSite): string {
    this.layer(what, layer);
    if (!LINEAR_SITES.includes(site)) {
      this.fail(`${what} site '${String(site)}' is not a linear site (${LINEAR_SITES.join(', ')})`);
    }
    const module = siteModule(this.config, layer, site);
    this.once(`${what} site ${module}`);
    return module;
  }

  layerNormSite(layer: number, site: LayerNormSite): string {
    this.layer('LayerNorm', layer);
    if (!LAYER_NORM_SITES.includes(site)) {
      this.fail(`LayerNorm site '${String(site)}' is not one of ${LAYER_NORM_SITES.join(', ')}`);
    }
    const module = siteModule(this.config, layer, site);
    this.once(`LayerNorm ${module}`);
    return module;
  }

  floats(name: string, data: Float32Array, shape: readonly number[]): void {
    const count = shape.reduce((a, b) => a * b, 1);
    if (data.length !== count) {
      this.fail(`tensor '${name}' holds ${data.length} values, expected shape ${formatShape(shape)} (${count} values)`);
    }
    const bad = firstNonFinite(data);
    if (bad) this.fail(`tensor '${name}' has a non-finite value (${bad.value}) at index ${bad.index}`);
  }

  /** Flat indices into a [out, in] weight: in range, strictly increasing (so no duplicates), density bound. */
  sparseIndices(name: string, indices: Int32Array, size: number, shape: string): void {
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i]!;
      if (index < 0 || index >= size) {
        this.fail(`tensor '${name}' has index ${index} at position ${i}, outside 0..${size - 1} of a ${shape} weight`);
      }
      if (i > 0) {
        const previous = indices[i - 1]!;
        if (index === previous) this.fail(`tensor '${name}' has duplicate index ${index} at positions ${i - 1} and ${i}`);
        if (index < previous) {
          this.fail(`tensor '${name}' is not strictly increasing: index ${index} at position ${i} follows ${previous}`);
        }
      }
    }
    const density = indices.length / size;
    if (density > MAX_SPARSE_DENSITY) {
      this.fail(
        `tensor '${name}' has ${indices.length} of ${size} entries (density ${density.toFixed(3)}), above the ` +
          `${MAX_SPARSE_DENSITY} limit: merge such a dense delta into a model instead`,
      );
    }
  }
}
