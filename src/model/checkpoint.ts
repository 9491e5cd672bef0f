import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError } from '../util/errors.js';
import { parseBertConfig, type BertConfig } from './bert-config.js';
import { SafetensorsFile } from './safetensors.js';

/** One linear layer as torch.nn.Linear stores it: weight [out, in], bias [out]. */
export interface LinearWeights {
  weight: Float32Array;
  bias: Float32Array;
  outDim: number;
  inDim: number;
}

export interface LayerNormWeights {
  gamma: Float32Array;
  beta: Float32Array;
}

export interface EncoderLayerWeights {
  query: LinearWeights;
  key: LinearWeights;
  value: LinearWeights;
  attentionOutput: LinearWeights;
  attentionLayerNorm: LayerNormWeights;
  intermediate: LinearWeights;
  output: LinearWeights;
  outputLayerNorm: LayerNormWeights;
}

/** Host (f32) copy of every base-model tensor, grouped as the graph uses them. */
export interface BertWeights {
  wordEmbeddings: Float32Array;
  positionEmbeddings: Float32Array;
  tokenTypeEmbeddings: Float32Array;
  embeddingLayerNorm: LayerNormWeights;
  layers: EncoderLayerWeights[];
  pooler: LinearWeights;
  classifier: LinearWeights | null;
}

export interface BertCheckpoint {
  dir: string;
  config: BertConfig;
  weights: BertWeights;
  /** Classifier output count, 0 for a bare BertModel. */
  numLabels: number;
}

/**
 * Resolves Hugging Face tensor names: BertModel saves them bare,
 * BertForSequenceClassification under `bert.`; old TF-converted checkpoints
 * spell LayerNorm parameters gamma/beta.
 */
class TensorSource {
  private readonly used = new Set<string>();

  constructor(
    private readonly file: SafetensorsFile,
    private readonly prefix: string,
  ) {}

  private resolve(name: string): string | undefined {
    const candidates = [this.prefix + name, name];
    if (name.endsWith('LayerNorm.weight')) candidates.push(this.prefix + name.replace(/weight$/, 'gamma'));
    if (name.endsWith('LayerNorm.bias')) candidates.push(this.prefix + name.replace(/bias$/, 'beta'));
    return candidates.find((c) => this.file.has(c));
  }

  has(name: string): boolean {
    return this.resolve(name) !== undefined;
  }

  /** Read `name` as f32, checking its shape; errors name the tensor and both shapes. */
  read(name: string, shape: number[]): Float32Array {
    const stored = this.resolve(name);
    if (stored === undefined) {
      throw new CheckpointError(
        `${this.file.path}: missing tensor '${this.prefix}${name}' (expected shape [${shape.join(', ')}])`,
      );
    }
    const info = this.file.info(stored)!;
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        `${this.file.path}: tensor '${stored}' has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`,
      );
    }
    if (!['F32', 'F16', 'BF16'].includes(info.dtype)) {
      throw new CheckpointError(`${this.file.path}: tensor '${stored}' has dtype ${info.dtype}, expected F32/F16/BF16`);
    }
    this.used.add(stored);
    const data = this.file.readFloat32(stored);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) {
        throw new CheckpointError(`${this.file.path}: tensor '${stored}' contains a non-finite value at index ${i}`);
      }
    }
    return data;
  }

  linear(name: string, outDim: number, inDim: number): LinearWeights {
    return {
      weight: this.read(`${name}.weight`, [outDim, inDim]),
      bias: this.read(`${name}.bias`, [outDim]),
      outDim,
      inDim,
    };
  }

  layerNorm(name: string, dim: number): LayerNormWeights {
    return { gamma: this.read(`${name}.weight`, [dim]), beta: this.read(`${name}.bias`, [dim]) };
  }
}

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

/** Load config.json + model.safetensors of a Hugging Face BERT checkpoint directory. */
export async function loadCheckpoint(dir: string): Promise<BertCheckpoint> {
  const config = parseBertConfig(await readCheckpointJson(join(dir, 'config.json')), join(dir, 'config.json'));
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
  const prefix = file.has('bert.embeddings.word_embeddings.weight') ? 'bert.' : '';
  const src = new TensorSource(file, prefix);
  const H = config.hiddenSize;
  const I = config.intermediateSize;

  const layers: EncoderLayerWeights[] = [];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `encoder.layer.${i}`;
    layers.push({
      query: src.linear(`${p}.attention.self.query`, H, H),
      key: src.linear(`${p}.attention.self.key`, H, H),
      value: src.linear(`${p}.attention.self.value`, H, H),
      attentionOutput: src.linear(`${p}.attention.output.dense`, H, H),
      attentionLayerNorm: src.layerNorm(`${p}.attention.output.LayerNorm`, H),
      intermediate: src.linear(`${p}.intermediate.dense`, I, H),
      output: src.linear(`${p}.output.dense`, H, I),
      outputLayerNorm: src.layerNorm(`${p}.output.LayerNorm`, H),
    });
  }

  // The classifier is saved without the `bert.` prefix.
  let classifier: LinearWeights | null = null;
  if (file.has('classifier.weight')) {
    const rows = file.info('classifier.weight')!.shape[0] ?? 0;
    const classifierSrc = new TensorSource(file, '');
    classifier = classifierSrc.linear('classifier', rows, H);
    if (config.id2label && config.id2label.length !== rows) {
      throw new CheckpointError(
        `${weightsPath}: classifier has ${rows} outputs but config.json id2label has ${config.id2label.length} labels`,
      );
    }
  }

  const weights: BertWeights = {
    wordEmbeddings: src.read('embeddings.word_embeddings.weight', [config.vocabSize, H]),
    positionEmbeddings: src.read('embeddings.position_embeddings.weight', [config.maxPositionEmbeddings, H]),
    tokenTypeEmbeddings: src.read('embeddings.token_type_embeddings.weight', [config.typeVocabSize, H]),
    embeddingLayerNorm: src.layerNorm('embeddings.LayerNorm', H),
    layers,
    pooler: src.linear('pooler.dense', H, H),
    classifier,
  };
  return { dir, config, weights, numLabels: classifier?.outDim ?? 0 };
}
