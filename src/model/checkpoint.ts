import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError } from '../util/errors.js';
import type { BertConfig, BertWeights } from './families/bert.js';
import { familyForConfig, type AnyModelFamily } from './families/index.js';
import { SafetensorsFile } from './safetensors.js';

export type { LayerNormWeights, LinearWeights } from './tensor-source.js';
export type { BertWeights, EncoderLayerWeights } from './families/bert.js';

/** A loaded base model: its family (picked from config.json), config, host weights. */
export interface ModelCheckpoint {
  dir: string;
  family: AnyModelFamily;
  config: BertConfig;
  weights: BertWeights;
  /** Classifier output count, 0 for a bare encoder. */
  numLabels: number;
}

/** Every family is BERT today; the name stays until src/pet takes the family's types. */
export type BertCheckpoint = ModelCheckpoint;

/** Read a JSON file of a model directory; unreadable or malformed → CheckpointError naming the file. */
export async function readCheckpointJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CheckpointError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CheckpointError(`${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/** Load config.json + model.safetensors of a Hugging Face checkpoint directory through its model family. */
export async function loadCheckpoint(dir: string): Promise<ModelCheckpoint> {
  const configPath = join(dir, 'config.json');
  const raw = await readCheckpointJson(configPath);
  const family = familyForConfig(raw, configPath);
  const config = family.parseConfig(raw, configPath);
  const weightsPath = join(dir, 'model.safetensors');
  try {
    await stat(weightsPath);
  } catch {
    throw new CheckpointError(`${dir}: model.safetensors not found (only safetensors checkpoints are supported)`);
  }
  let file: SafetensorsFile;
  try {
    file = await SafetensorsFile.open(weightsPath);
  } catch (err) {
    throw new CheckpointError(`${weightsPath}: ${(err as Error).message}`, { cause: err });
  }
  const { weights, numLabels } = family.loadWeights(file, config);
  return { dir, family, config, weights, numLabels };
}
