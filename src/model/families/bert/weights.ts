import { CheckpointError } from '../../../util/errors.js';
import type { SafetensorsFile } from '../../safetensors.js';
import { TensorSource, type LayerNormWeights, type LinearWeights } from '../../tensor-source.js';
import type { LoadedWeights } from '../types.js';
import type { BertConfig } from './config.js';

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

/** Old TF-converted checkpoints spell LayerNorm parameters gamma/beta. */
function layerNormAliases(name: string): string[] {
  if (name.endsWith('LayerNorm.weight')) return [name.replace(/weight$/, 'gamma')];
  if (name.endsWith('LayerNorm.bias')) return [name.replace(/bias$/, 'beta')];
  return [];
}

/**
 * Every tensor of a BertModel (names bare) or BertForSequenceClassification
 * (names under `bert.`, the classifier bare).
 */
export function loadBertWeights(file: SafetensorsFile, config: BertConfig): LoadedWeights<BertWeights> {
  const prefix = file.has('bert.embeddings.word_embeddings.weight') ? 'bert.' : '';
  const src = new TensorSource(file, prefix, layerNormAliases);
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
    classifier = new TensorSource(file, '', layerNormAliases).linear('classifier', rows, H);
    if (config.id2label && config.id2label.length !== rows) {
      throw new CheckpointError(
        `${file.path}: classifier has ${rows} outputs but config.json id2label has ${config.id2label.length} labels`,
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
  return { weights, numLabels: classifier?.outDim ?? 0 };
}
