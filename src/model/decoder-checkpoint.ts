import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError } from '../util/errors.js';
import { readCheckpointJson } from './checkpoint.js';
import type { DecoderConfig, DecoderFamily, DecoderWeights } from './families/decoder/types.js';
import { decoderFamilyForConfig } from './families/index.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';
import type { TensorFile } from './tensor-source.js';

/** A loaded causal decoder: its family (from config.json), canonical config and host weights. */
export interface DecoderCheckpoint {
  dir: string;
  family: DecoderFamily;
  config: DecoderConfig;
  weights: DecoderWeights;
}

const SINGLE_FILE = 'model.safetensors';
const SHARD_INDEX = 'model.safetensors.index.json';

const exists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );

/** The tensors of a checkpoint split over shards, read through model.safetensors.index.json's weight_map. */
class ShardedTensors implements TensorFile {
  constructor(
    readonly path: string,
    private readonly byName: ReadonlyMap<string, SafetensorsFile>,
  ) {}
  has(name: string): boolean {
    return this.byName.has(name);
  }
  info(name: string): TensorInfo | undefined {
    return this.byName.get(name)?.info(name);
  }
  readFloat32(name: string): Float32Array {
    const file = this.byName.get(name);
    if (!file) throw new CheckpointError(`${this.path}: tensor '${name}' is not in the weight_map`);
    return file.readFloat32(name);
  }
}

async function openShards(dir: string): Promise<TensorFile> {
  const indexPath = join(dir, SHARD_INDEX);
  const index = (await readCheckpointJson(indexPath)) as { weight_map?: unknown };
  if (typeof index.weight_map !== 'object' || index.weight_map === null) {
    throw new CheckpointError(`${indexPath}: weight_map must be an object of tensor name → shard file`);
  }
  const files = new Map<string, SafetensorsFile>();
  const byName = new Map<string, SafetensorsFile>();
  for (const [name, shard] of Object.entries(index.weight_map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) {
      throw new CheckpointError(`${indexPath}: weight_map['${name}'] must be a file name in the model directory`);
    }
    let file = files.get(shard);
    if (!file) {
      file = await openFile(join(dir, shard));
      files.set(shard, file);
    }
    if (!file.has(name)) throw new CheckpointError(`${join(dir, shard)}: tensor '${name}' listed in ${SHARD_INDEX} is missing`);
    byName.set(name, file);
  }
  return new ShardedTensors(indexPath, byName);
}

async function openFile(path: string): Promise<SafetensorsFile> {
  try {
    return await SafetensorsFile.open(path);
  } catch (err) {
    throw new CheckpointError(`${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** config.json + model.safetensors (or a sharded index) of a Hugging Face causal LM directory. */
export async function loadDecoderCheckpoint(dir: string): Promise<DecoderCheckpoint> {
  const configPath = join(dir, 'config.json');
  const raw = await readCheckpointJson(configPath);
  const family = decoderFamilyForConfig(raw, configPath);
  const config = family.parseConfig(raw, configPath);
  let tensors: TensorFile;
  if (await exists(join(dir, SINGLE_FILE))) tensors = await openFile(join(dir, SINGLE_FILE));
  else if (await exists(join(dir, SHARD_INDEX))) tensors = await openShards(dir);
  else throw new CheckpointError(`${dir}: neither ${SINGLE_FILE} nor ${SHARD_INDEX} found (only safetensors checkpoints are supported)`);
  return { dir, family, config, weights: family.loadWeights(tensors, config) };
}
