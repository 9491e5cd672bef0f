// BERT architectures used for random-weight checkpoints. The four sizes are
// those of Turc et al., "Well-Read Students Learn Better" (the google/bert_uncased_L-*
// checkpoints) plus bert-base; everything except depth and width is shared
// with bert-base-uncased's config.json.

export type PresetName = 'bert-tiny' | 'bert-mini' | 'bert-small' | 'bert-base';

/** One BERT architecture, in the units and meaning of transformers' BertConfig. */
export interface BertArchitecture {
  numHiddenLayers: number;
  hiddenSize: number;
  numAttentionHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  typeVocabSize: number;
  hiddenAct: 'gelu';
  layerNormEps: number;
  initializerRange: number;
  padTokenId: number;
  positionEmbeddingType: 'absolute';
}

const BERT_BASE_UNCASED_SHARED = {
  vocabSize: 30522,
  maxPositionEmbeddings: 512,
  typeVocabSize: 2,
  hiddenAct: 'gelu',
  layerNormEps: 1e-12,
  initializerRange: 0.02,
  padTokenId: 0,
  positionEmbeddingType: 'absolute',
} as const;

export const PRESETS: Readonly<Record<PresetName, Readonly<BertArchitecture>>> = {
  'bert-tiny': { ...BERT_BASE_UNCASED_SHARED, numHiddenLayers: 2, hiddenSize: 128, numAttentionHeads: 2, intermediateSize: 512 },
  'bert-mini': { ...BERT_BASE_UNCASED_SHARED, numHiddenLayers: 4, hiddenSize: 256, numAttentionHeads: 4, intermediateSize: 1024 },
  'bert-small': { ...BERT_BASE_UNCASED_SHARED, numHiddenLayers: 4, hiddenSize: 512, numAttentionHeads: 8, intermediateSize: 2048 },
  'bert-base': { ...BERT_BASE_UNCASED_SHARED, numHiddenLayers: 12, hiddenSize: 768, numAttentionHeads: 12, intermediateSize: 3072 },
};

export const PRESET_NAMES: readonly PresetName[] = Object.keys(PRESETS) as PresetName[];

export function isPresetName(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}
