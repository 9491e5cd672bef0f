// A task's own classifier (every kind may bring one): reading it from a PET's
// tensors, its label names, its checks against the base model.

import type { BertConfig } from '../model/bert-config.js';
import { PetFormatError } from '../util/errors.js';
import type { PetTensorFile } from './formats/common.js';
import type { Validator } from './validator.js';

/** A task's own classifier; tasks without one are embedding tasks (pooled output). */
export interface TaskHead {
  /** [numLabels, H] */
  weight: Float32Array;
  /** [numLabels] */
  bias: Float32Array;
  id2label: string[];
}

export const CLASSIFIER_WEIGHT = 'classifier.weight';
export const CLASSIFIER_BIAS = 'classifier.bias';

/**
 * Label names of a head with `rows` outputs: the PET's own list when it has
 * one (its length must match), else the base config's when its length
 * matches, else LABEL_i as transformers names them.
 */
export function resolveId2label(own: string[] | null, rows: number, baseConfig: BertConfig, source: string): string[] {
  if (own !== null) {
    if (own.length !== rows) {
      throw new PetFormatError(`${source}: id2label has ${own.length} labels but the classifier has ${rows} rows`);
    }
    return own;
  }
  if (baseConfig.id2label && baseConfig.id2label.length === rows) return [...baseConfig.id2label];
  return Array.from({ length: rows }, (_, i) => `LABEL_${i}`);
}

/**
 * The task head from a classifier weight [L, H] and bias [L], or null when
 * the file holds neither (an embedding task). Half a head is refused.
 */
export function readHead(
  file: PetTensorFile,
  weightName: string,
  biasName: string,
  ownId2label: string[] | null,
  config: BertConfig,
  source: string,
): TaskHead | null {
  const hasWeight = file.has(weightName);
  const hasBias = file.has(biasName);
  if (!hasWeight && !hasBias) {
    if (ownId2label !== null) {
      throw new PetFormatError(`${source}: id2label is given but there is no classifier ('${weightName}', '${biasName}')`);
    }
    return null;
  }
  if (!hasWeight || !hasBias) {
    const [present, missing] = hasWeight ? [weightName, biasName] : [biasName, weightName];
    throw new PetFormatError(`${file.label}: classifier is incomplete: '${present}' is present but '${missing}' is missing`);
  }
  const weight = file.readFloat(weightName, [null, config.hiddenSize], 'classifier weight is [num_labels, hidden_size]');
  const rows = file.shape(weightName)[0]!;
  if (rows < 1) throw new PetFormatError(`${file.label}: tensor '${weightName}' has 0 rows; a classifier needs at least one label`);
  const bias = file.readFloat(biasName, [rows], `one bias per row of '${weightName}'`);
  return { weight, bias, id2label: resolveId2label(ownId2label, rows, config, source) };
}

export function validateHead(v: Validator, head: TaskHead): void {
  const rows = head.bias.length;
  if (rows < 1) v.fail(`classifier has ${rows} rows; a head needs at least one label`);
  v.floats(CLASSIFIER_BIAS, head.bias, [rows]);
  v.floats(CLASSIFIER_WEIGHT, head.weight, [rows, v.config.hiddenSize]);
  if (head.id2label.length !== rows) {
    v.fail(`id2label has ${head.id2label.length} labels but the classifier has ${rows} rows`);
  }
}
