// Random-weight BERT checkpoints laid out exactly as Hugging Face writes them
// (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
// vocab.txt), so the loader and the reference implementation can be tested
// without downloading real models. Weights are deterministic given the seed.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { PetServeError } from '../util/errors.js';
import { Rng } from '../util/random.js';
import { isPresetName, PRESETS } from './presets.js';
import type { BertArchitecture, PresetName } from './presets.js';
import { writeSafetensors } from './safetensors.js';
import type { TensorToWrite } from './safetensors.js';

export type CheckpointDtype = 'f32' | 'f16' | 'bf16';

export interface InitModelOptions {
  preset: PresetName;
  outDir: string;
  /** 0 (default) writes a BertModel; > 0 a BertForSequenceClassification with that many labels. */
  numLabels?: number;
  seed?: number;
  dtype?: CheckpointDtype;
  /** Overrides the preset's vocab_size, for small test models. */
  vocabSize?: number;
  /** Overrides the preset's max_position_embeddings. */
  maxPositions?: number;
  /** Called after each tensor is generated, then after each is written (bert-base takes tens of seconds). */
  onProgress?: (phase: 'generate' | 'write', tensorsDone: number, tensorsTotal: number) => void;
}

export interface InitModelResult {
  configPath: string;
  weightsPath: string;
  tokenizerPath: string;
  tokenizerConfigPath: string;
  vocabPath: string;
  parameterCount: number;
}

/** initModel was called with options that cannot describe a checkpoint. */
export class InitModelOptionsError extends PetServeError {
  constructor(detail: string) {
    super('INIT_MODEL_OPTIONS', `invalid initModel options: ${detail}`);
  }
}

// How each tensor's values are drawn. Biases are random rather than zero and
// LayerNorm parameters sit away from (1, 0) so that a kernel which drops a
// bias or swaps gamma and beta produces visibly wrong outputs.
type TensorInit = 'weight' | 'bias' | 'layerNormGamma' | 'layerNormBeta' | 'classifierWeight';

export interface BertTensorSpec {
  name: string;
  shape: number[];
  init: TensorInit;
}

const LAYER_NORM_SPREAD = 0.05;
// Large enough that the logits of different labels differ visibly.
const CLASSIFIER_WEIGHT_STD = 0.2;
export const TRANSFORMERS_VERSION = '4.46.3';

export const TORCH_DTYPE_NAMES: Readonly<Record<CheckpointDtype, string>> = {
  f32: 'float32',
  f16: 'float16',
  bf16: 'bfloat16',
};

export const SAFETENSORS_DTYPES: Readonly<Record<CheckpointDtype, TensorToWrite['dtype']>> = {
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
};

export async function initModel(opts: InitModelOptions): Promise<InitModelResult> {
  const { numLabels = 0, seed = 0, dtype = 'f32' } = opts;
  const architecture = resolveArchitecture(opts);
  if (!Number.isSafeInteger(numLabels) || numLabels < 0) {
    throw new InitModelOptionsError(`numLabels must be a non-negative integer, got ${numLabels}`);
  }
  if (!Number.isSafeInteger(seed)) {
    throw new InitModelOptionsError(`seed must be an integer, got ${seed}`);
  }
  if (!Object.hasOwn(SAFETENSORS_DTYPES, dtype)) {
    throw new InitModelOptionsError(`dtype must be f32, f16 or bf16, got ${JSON.stringify(dtype)}`);
  }

  await mkdir(opts.outDir, { recursive: true });
  const configPath = join(opts.outDir, 'config.json');
  const weightsPath = join(opts.outDir, 'model.safetensors');
  const tokenizerPath = join(opts.outDir, 'tokenizer.json');
  const tokenizerConfigPath = join(opts.outDir, 'tokenizer_config.json');
  const vocabPath = join(opts.outDir, 'vocab.txt');

  const layout = bertTensorLayout(architecture, numLabels);
  const counter = (phase: 'generate' | 'write'): (() => void) => {
    let done = 0;
    return () => opts.onProgress?.(phase, ++done, layout.length);
  };
  const tensors = generateNormalTensors(layout, seed, SAFETENSORS_DTYPES[dtype], counter('generate'), (spec) => bertNormal(spec, architecture));
  await writeSafetensors(weightsPath, tensors, { format: 'pt' }, counter('write'));

  await writeJson(configPath, hfConfigJson(architecture, numLabels, dtype));
  const vocabulary = buildBertVocabulary(architecture.vocabSize);
  await writeJson(tokenizerPath, tokenizerJson(vocabulary));
  await writeJson(tokenizerConfigPath, tokenizerConfigJson(architecture.maxPositionEmbeddings));
  await writeFile(vocabPath, vocabulary.join('\n') + '\n');

  const parameterCount = layout.reduce((sum, spec) => sum + elementCount(spec.shape), 0);
  return { configPath, weightsPath, tokenizerPath, tokenizerConfigPath, vocabPath, parameterCount };
}

function resolveArchitecture(opts: InitModelOptions): BertArchitecture {
  if (!isPresetName(opts.preset)) {
    throw new InitModelOptionsError(`unknown preset ${JSON.stringify(opts.preset)}`);
  }
  const architecture: BertArchitecture = { ...PRESETS[opts.preset] };
  if (opts.vocabSize !== undefined) {
    if (!Number.isSafeInteger(opts.vocabSize) || opts.vocabSize < MIN_VOCAB_SIZE) {
      throw new InitModelOptionsError(
        `vocabSize must be an integer >= ${MIN_VOCAB_SIZE} (room for the special tokens), got ${opts.vocabSize}`,
      );
    }
    architecture.vocabSize = opts.vocabSize;
  }
  if (opts.maxPositions !== undefined) {
    if (!Number.isSafeInteger(opts.maxPositions) || opts.maxPositions < 1) {
      throw new InitModelOptionsError(`maxPositions must be a positive integer, got ${opts.maxPositions}`);
    }
    architecture.maxPositionEmbeddings = opts.maxPositions;
  }
  return architecture;
}

// ------------------------------------------------------------------ weights

/**
 * Every tensor of a BertModel (numLabels = 0) or BertForSequenceClassification
 * checkpoint, with transformers' names and shapes, in state_dict order.
 * Linear weights are [out_features, in_features] as torch.nn.Linear stores them.
 */
export function bertTensorLayout(architecture: BertArchitecture, numLabels: number): BertTensorSpec[] {
  const { hiddenSize: h, intermediateSize: ffn } = architecture;
  const prefix = numLabels > 0 ? 'bert.' : '';
  const specs: BertTensorSpec[] = [];
  const linear = (name: string, outFeatures: number, inFeatures: number): void => {
    specs.push({ name: `${prefix}${name}.weight`, shape: [outFeatures, inFeatures], init: 'weight' });
    specs.push({ name: `${prefix}${name}.bias`, shape: [outFeatures], init: 'bias' });
  };
  const layerNorm = (name: string): void => {
    specs.push({ name: `${prefix}${name}.weight`, shape: [h], init: 'layerNormGamma' });
    specs.push({ name: `${prefix}${name}.bias`, shape: [h], init: 'layerNormBeta' });
  };

  specs.push({ name: `${prefix}embeddings.word_embeddings.weight`, shape: [architecture.vocabSize, h], init: 'weight' });
  specs.push({
    name: `${prefix}embeddings.position_embeddings.weight`,
    shape: [architecture.maxPositionEmbeddings, h],
    init: 'weight',
  });
  specs.push({ name: `${prefix}embeddings.token_type_embeddings.weight`, shape: [architecture.typeVocabSize, h], init: 'weight' });
  layerNorm('embeddings.LayerNorm');
  for (let layer = 0; layer < architecture.numHiddenLayers; layer++) {
    const base = `encoder.layer.${layer}`;
    linear(`${base}.attention.self.query`, h, h);
    linear(`${base}.attention.self.key`, h, h);
    linear(`${base}.attention.self.value`, h, h);
    linear(`${base}.attention.output.dense`, h, h);
    layerNorm(`${base}.attention.output.LayerNorm`);
    linear(`${base}.intermediate.dense`, ffn, h);
    linear(`${base}.output.dense`, h, ffn);
    layerNorm(`${base}.output.LayerNorm`);
  }
  linear('pooler.dense', h, h);
  if (numLabels > 0) {
    specs.push({ name: 'classifier.weight', shape: [numLabels, h], init: 'classifierWeight' });
    specs.push({ name: 'classifier.bias', shape: [numLabels], init: 'bias' });
  }
  return specs;
}

/**
 * Draw every tensor of `layout` from normals, one generator walked in layout
 * order: the values of a tensor depend only on the seed and on the tensors
 * before it, never on dtype. `normal` gives each tensor's (mean, std).
 */
export function generateNormalTensors<S extends { name: string; shape: number[] }>(
  layout: readonly S[],
  seed: number,
  dtype: TensorToWrite['dtype'],
  onTensor: () => void,
  normal: (spec: S) => readonly [mean: number, std: number],
): Record<string, TensorToWrite> {
  const rng = new Rng(seed);
  const tensors: Record<string, TensorToWrite> = {};
  for (const spec of layout) {
    const data = new Float32Array(elementCount(spec.shape));
    const [mean, std] = normal(spec);
    rng.fillNormal(data, mean, std);
    tensors[spec.name] = { dtype, shape: spec.shape, data };
    onTensor();
  }
  return tensors;
}

function bertNormal(spec: BertTensorSpec, architecture: BertArchitecture): readonly [number, number] {
  switch (spec.init) {
    case 'weight':
    case 'bias':
      return [0, architecture.initializerRange];
    case 'layerNormGamma':
      return [1, LAYER_NORM_SPREAD];
    case 'layerNormBeta':
      return [0, LAYER_NORM_SPREAD];
    case 'classifierWeight':
      return [0, CLASSIFIER_WEIGHT_STD];
  }
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

// ------------------------------------------------------------------ config.json

function hfConfigJson(architecture: BertArchitecture, numLabels: number, dtype: CheckpointDtype): Record<string, unknown> {
  const config: Record<string, unknown> = {
    architectures: [numLabels > 0 ? 'BertForSequenceClassification' : 'BertModel'],
    attention_probs_dropout_prob: 0.1,
    classifier_dropout: null,
    hidden_act: architecture.hiddenAct,
    hidden_dropout_prob: 0.1,
    hidden_size: architecture.hiddenSize,
    initializer_range: architecture.initializerRange,
    intermediate_size: architecture.intermediateSize,
    layer_norm_eps: architecture.layerNormEps,
    max_position_embeddings: architecture.maxPositionEmbeddings,
    model_type: 'bert',
    num_attention_heads: architecture.numAttentionHeads,
    num_hidden_layers: architecture.numHiddenLayers,
    pad_token_id: architecture.padTokenId,
    position_embedding_type: architecture.positionEmbeddingType,
    torch_dtype: TORCH_DTYPE_NAMES[dtype],
    transformers_version: TRANSFORMERS_VERSION,
    type_vocab_size: architecture.typeVocabSize,
    use_cache: true,
    vocab_size: architecture.vocabSize,
  };
  if (numLabels > 0) {
    // transformers has no num_labels key: the label count is len(id2label).
    // It omits id2label when it equals its 2-label default; we always write
    // it so the count is explicit (loaders should still default to 2).
    const labels = Array.from({ length: numLabels }, (_, id) => `LABEL_${id}`);
    config.id2label = Object.fromEntries(labels.map((label, id) => [String(id), label]));
    config.label2id = Object.fromEntries(labels.map((label, id) => [label, id]));
  }
  // transformers writes keys sorted (json.dumps(sort_keys=True)).
  return Object.fromEntries(Object.entries(config).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// ------------------------------------------------------------------ tokenizer

export const SPECIAL_TOKEN_IDS = { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 } as const;

const SPECIAL_TOKENS: ReadonlyArray<readonly [string, number]> = [
  ['[PAD]', SPECIAL_TOKEN_IDS.pad],
  ['[UNK]', SPECIAL_TOKEN_IDS.unk],
  ['[CLS]', SPECIAL_TOKEN_IDS.cls],
  ['[SEP]', SPECIAL_TOKEN_IDS.sep],
  ['[MASK]', SPECIAL_TOKEN_IDS.mask],
];

const MIN_VOCAB_SIZE = SPECIAL_TOKEN_IDS.mask + 1;
// bert-base-uncased fills ids 104..998 with [unused99]..[unused993]. Smaller
// test vocabularies keep the same share (~3%) so real tokens still fit.
const BERT_BASE_VOCAB_SIZE = 30522;
const BERT_BASE_EXTRA_UNUSED = 895;

const ASCII_PUNCTUATION = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';
const DIGITS = '0123456789';
const LOWERCASE = 'abcdefghijklmnopqrstuvwxyz';

// Common English words, so that test sentences tokenize into whole words.
const COMMON_WORDS = `
the of and to in is was for on that with as by at from his he it an were are which this be or
has had not but first one their its new after who they have her she two been other when there
all during into school time may years more most only over city some world would where later up
such used many can state about national out known university united then made year three also
these american part between well so under than both while since game team season film group
series through them if him government including life south north before became second until
people war what each being around early called best work because high member general any john
company several world four family five public back like no played same house did name end long
another my we how just even day last number make i you your our me us very music best good
great little own old right big small large next few home still area found off way against
home man men women woman child children could should will must might does do done say said get
got go going went come came take took see saw know knew think thought look looked want give
gave use find found tell told ask asked work seem feel felt try tried leave left call called
need keep let begin began show showed hear heard play run ran move live lived believe bring
brought happen write wrote provide sit sat stand stood lose lost pay paid meet met include
continue set learn change lead led understand watch follow stop create speak spoke read allow
add spend grow open walk win won offer remember love consider appear buy wait serve die send
expect build stay fall cut reach kill remain suggest raise pass sell require report decide
pull book books word words page story stories point thing things place places case week
weeks company system program question problem fact hand hands eye eyes room money night
water mother father head side business power hour hours line lines end members law car cars
idea ideas body information face others level office door health person art history party
result results morning reason research girl guy moment air teacher force education food
model models data test tests value values sentence sentences token tokens text input output
task tasks review movie movies great bad terrible excellent happy sad positive negative
neutral good better worse best worst nice awesome awful boring amazing love hate like
`;

/**
 * A vocabulary of exactly vocabSize tokens laid out like bert-base-uncased:
 * [PAD] at 0, [unused0..98] at 1..99, [UNK] [CLS] [SEP] [MASK] at 100..103,
 * more [unusedN], then single characters, their "##" forms, common words, and
 * deterministic "##xy" pieces to fill the rest. No duplicates.
 */
export function buildBertVocabulary(vocabSize: number): string[] {
  if (!Number.isSafeInteger(vocabSize) || vocabSize < MIN_VOCAB_SIZE) {
    throw new InitModelOptionsError(`vocabSize must be an integer >= ${MIN_VOCAB_SIZE}, got ${vocabSize}`);
  }
  const vocabulary: string[] = new Array<string>(MIN_VOCAB_SIZE);
  for (let id = 0; id < MIN_VOCAB_SIZE; id++) {
    vocabulary[id] = `[unused${id - 1}]`;
  }
  for (const [token, id] of SPECIAL_TOKENS) {
    vocabulary[id] = token;
  }
  const extraUnused = Math.min(
    vocabSize - MIN_VOCAB_SIZE,
    BERT_BASE_EXTRA_UNUSED,
    Math.floor((BERT_BASE_EXTRA_UNUSED * vocabSize) / BERT_BASE_VOCAB_SIZE),
  );
  // The first 99 unused tokens sit below [UNK]; numbering continues after [MASK].
  for (let i = 0; i < extraUnused; i++) {
    vocabulary.push(`[unused${SPECIAL_TOKEN_IDS.unk - 1 + i}]`);
  }

  const seen = new Set(vocabulary);
  const candidates = function* (): Generator<string> {
    yield* ASCII_PUNCTUATION;
    yield* DIGITS;
    yield* LOWERCASE;
    for (const ch of DIGITS + LOWERCASE) yield `##${ch}`;
    yield* COMMON_WORDS.split(/\s+/).filter((word) => word.length > 0);
    for (let length = 2; ; length++) yield* lowercaseStrings(length, '##');
  };
  for (const token of candidates()) {
    if (vocabulary.length >= vocabSize) break;
    if (!seen.has(token)) {
      seen.add(token);
      vocabulary.push(token);
    }
  }
  return vocabulary;
}

/** All strings of `length` lowercase letters in lexicographic order, each prefixed. */
function* lowercaseStrings(length: number, prefix: string): Generator<string> {
  const digits = new Array<number>(length).fill(0);
  for (;;) {
    yield prefix + digits.map((d) => LOWERCASE[d]).join('');
    let position = length - 1;
    while (position >= 0 && digits[position] === LOWERCASE.length - 1) {
      digits[position] = 0;
      position--;
    }
    if (position < 0) return;
    digits[position] = digits[position]! + 1;
  }
}

function specialTokenFlags(content: string): Record<string, unknown> {
  return { content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** tokenizer.json in the `tokenizers` library's format for a BERT WordPiece tokenizer. */
function tokenizerJson(vocabulary: readonly string[]): Record<string, unknown> {
  const specialSorted = [...SPECIAL_TOKENS].sort(([, a], [, b]) => a - b);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialSorted.map(([token, id]) => ({ id, ...specialTokenFlags(token) })),
    normalizer: {
      type: 'BertNormalizer',
      clean_text: true,
      handle_chinese_chars: true,
      strip_accents: null,
      lowercase: true,
    },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [
        { SpecialToken: { id: '[CLS]', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: '[CLS]', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: '[SEP]', type_id: 1 } },
      ],
      special_tokens: {
        '[CLS]': { id: '[CLS]', ids: [SPECIAL_TOKEN_IDS.cls], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [SPECIAL_TOKEN_IDS.sep], tokens: ['[SEP]'] },
      },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: {
      type: 'WordPiece',
      unk_token: '[UNK]',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocabulary.map((token, id) => [token, id])),
    },
  };
}

/** tokenizer_config.json as transformers' BertTokenizer(Fast).save_pretrained writes it. */
function tokenizerConfigJson(maxPositions: number): Record<string, unknown> {
  const specialSorted = [...SPECIAL_TOKENS].sort(([, a], [, b]) => a - b);
  return {
    added_tokens_decoder: Object.fromEntries(specialSorted.map(([token, id]) => [String(id), specialTokenFlags(token)])),
    clean_up_tokenization_spaces: true,
    cls_token: '[CLS]',
    do_lower_case: true,
    mask_token: '[MASK]',
    model_max_length: maxPositions,
    pad_token: '[PAD]',
    sep_token: '[SEP]',
    strip_accents: null,
    tokenize_chinese_chars: true,
    tokenizer_class: 'BertTokenizer',
    unk_token: '[UNK]',
  };
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, JSON.stringify(value, null, 2) + '\n');
}
