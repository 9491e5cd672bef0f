import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  bertTensorLayout,
  buildBertVocabulary,
  initModel,
  InitModelOptionsError,
  SPECIAL_TOKEN_IDS,
} from '../../src/model/init-model.js';
import type { InitModelResult } from '../../src/model/init-model.js';
import { PRESETS } from '../../src/model/presets.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/util/f16.js';

const VOCAB = 1000;
const H = 128;
const I = 512;
const LAYERS = 2;
const POSITIONS = 512;

let root: string;
let base: InitModelResult;
let classifier: InitModelResult;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-init-model-'));
  base = await initModel({ preset: 'bert-tiny', outDir: join(root, 'base'), vocabSize: VOCAB });
  classifier = await initModel({ preset: 'bert-tiny', outDir: join(root, 'cls'), vocabSize: VOCAB, numLabels: 3 });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
}

/** Expected names and shapes, written out independently of bertTensorLayout. */
function expectedShapes(prefix: string): Map<string, number[]> {
  const shapes = new Map<string, number[]>([
    [`${prefix}embeddings.word_embeddings.weight`, [VOCAB, H]],
    [`${prefix}embeddings.position_embeddings.weight`, [POSITIONS, H]],
    [`${prefix}embeddings.token_type_embeddings.weight`, [2, H]],
    [`${prefix}embeddings.LayerNorm.weight`, [H]],
    [`${prefix}embeddings.LayerNorm.bias`, [H]],
    [`${prefix}pooler.dense.weight`, [H, H]],
    [`${prefix}pooler.dense.bias`, [H]],
  ]);
  for (let layer = 0; layer < LAYERS; layer++) {
    const p = `${prefix}encoder.layer.${layer}.`;
    for (const projection of ['query', 'key', 'value']) {
      shapes.set(`${p}attention.self.${projection}.weight`, [H, H]);
      shapes.set(`${p}attention.self.${projection}.bias`, [H]);
    }
    shapes.set(`${p}attention.output.dense.weight`, [H, H]);
    shapes.set(`${p}attention.output.dense.bias`, [H]);
    shapes.set(`${p}attention.output.LayerNorm.weight`, [H]);
    shapes.set(`${p}attention.output.LayerNorm.bias`, [H]);
    shapes.set(`${p}intermediate.dense.weight`, [I, H]);
    shapes.set(`${p}intermediate.dense.bias`, [I]);
    shapes.set(`${p}output.dense.weight`, [H, I]);
    shapes.set(`${p}output.dense.bias`, [H]);
    shapes.set(`${p}output.LayerNorm.weight`, [H]);
    shapes.set(`${p}output.LayerNorm.bias`, [H]);
  }
  return shapes;
}

function meanAndStd(values: Float32Array): { mean: number; std: number } {
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / values.length;
  let squares = 0;
  for (const v of values) squares += (v - mean) ** 2;
  return { mean, std: Math.sqrt(squares / values.length) };
}

describe('initModel for BertModel', () => {
  it('writes all five files into the output directory', () => {
    expect(base.configPath).toBe(join(root, 'base', 'config.json'));
    expect(base.weightsPath).toBe(join(root, 'base', 'model.safetensors'));
    expect(base.tokenizerPath).toBe(join(root, 'base', 'tokenizer.json'));
    expect(base.tokenizerConfigPath).toBe(join(root, 'base', 'tokenizer_config.json'));
    expect(base.vocabPath).toBe(join(root, 'base', 'vocab.txt'));
  });

  it('writes config.json with the keys transformers saves for BertModel, sorted', async () => {
    const config = await readJson(base.configPath);
    expect(config).toEqual({
      architectures: ['BertModel'],
      attention_probs_dropout_prob: 0.1,
      classifier_dropout: null,
      hidden_act: 'gelu',
      hidden_dropout_prob: 0.1,
      hidden_size: H,
      initializer_range: 0.02,
      intermediate_size: I,
      layer_norm_eps: 1e-12,
      max_position_embeddings: POSITIONS,
      model_type: 'bert',
      num_attention_heads: 2,
      num_hidden_layers: LAYERS,
      pad_token_id: 0,
      position_embedding_type: 'absolute',
      torch_dtype: 'float32',
      transformers_version: expect.any(String) as unknown,
      type_vocab_size: 2,
      use_cache: true,
      vocab_size: VOCAB,
    });
    const keys = Object.keys(config);
    expect(keys).toEqual([...keys].sort());
  });

  it('writes exactly the expected tensors, unprefixed, as F32 with format=pt metadata', async () => {
    const file = await SafetensorsFile.open(base.weightsPath);
    const expected = expectedShapes('');
    expect(new Set(file.names())).toEqual(new Set(expected.keys()));
    for (const [name, shape] of expected) {
      expect(file.info(name)?.shape, name).toEqual(shape);
      expect(file.info(name)?.dtype, name).toBe('F32');
    }
    expect(file.metadata).toEqual({ format: 'pt' });
  });

  it('reports the parameter count of the tensors it wrote', () => {
    const perLayer = 4 * (H * H + H) + 2 * H + (I * H + I) + (H * I + H) + 2 * H;
    const expected = VOCAB * H + POSITIONS * H + 2 * H + 2 * H + LAYERS * perLayer + H * H + H;
    expect(base.parameterCount).toBe(expected);
  });

  it('draws values with the documented spreads, LayerNorm gamma near 1 and beta near 0', async () => {
    const file = await SafetensorsFile.open(base.weightsPath);
    const embeddings = meanAndStd(file.readFloat32('embeddings.word_embeddings.weight'));
    expect(Math.abs(embeddings.mean)).toBeLessThan(0.001);
    expect(embeddings.std).toBeCloseTo(0.02, 3);
    const gamma = meanAndStd(file.readFloat32('encoder.layer.1.output.LayerNorm.weight'));
    expect(gamma.mean).toBeGreaterThan(0.98);
    expect(gamma.mean).toBeLessThan(1.02);
    expect(gamma.std).toBeGreaterThan(0.03);
    expect(gamma.std).toBeLessThan(0.07);
    const beta = meanAndStd(file.readFloat32('encoder.layer.1.output.LayerNorm.bias'));
    expect(Math.abs(beta.mean)).toBeLessThan(0.02);
    expect(beta.std).toBeGreaterThan(0.03);
    const bias = file.readFloat32('encoder.layer.0.intermediate.dense.bias');
    expect(bias.some((v) => v !== 0)).toBe(true);
  });
});

describe('initModel for BertForSequenceClassification', () => {
  it('writes architectures, id2label and label2id but no num_labels key', async () => {
    const config = await readJson(classifier.configPath);
    expect(config.architectures).toEqual(['BertForSequenceClassification']);
    expect(config.id2label).toEqual({ '0': 'LABEL_0', '1': 'LABEL_1', '2': 'LABEL_2' });
    expect(config.label2id).toEqual({ LABEL_0: 0, LABEL_1: 1, LABEL_2: 2 });
    expect(config).not.toHaveProperty('num_labels');
    expect(config.hidden_size).toBe(H);
  });

  it('writes the encoder under the bert. prefix plus the classifier head', async () => {
    const file = await SafetensorsFile.open(classifier.weightsPath);
    const expected = expectedShapes('bert.');
    expected.set('classifier.weight', [3, H]);
    expected.set('classifier.bias', [3]);
    expect(new Set(file.names())).toEqual(new Set(expected.keys()));
    for (const [name, shape] of expected) {
      expect(file.info(name)?.shape, name).toEqual(shape);
    }
    expect(classifier.parameterCount).toBe(base.parameterCount + 3 * H + 3);
    const head = meanAndStd(file.readFloat32('classifier.weight'));
    expect(head.std).toBeGreaterThan(0.15);
    expect(head.std).toBeLessThan(0.25);
  });
});

describe('initModel determinism and dtype', () => {
  it('writes identical weights for the same seed and different weights for another seed', async () => {
    const again = await initModel({ preset: 'bert-tiny', outDir: join(root, 'again'), vocabSize: VOCAB });
    const otherSeed = await initModel({ preset: 'bert-tiny', outDir: join(root, 'seed1'), vocabSize: VOCAB, seed: 1 });
    const [first, second, third] = await Promise.all([
      readFile(base.weightsPath),
      readFile(again.weightsPath),
      readFile(otherSeed.weightsPath),
    ]);
    expect(second.equals(first)).toBe(true);
    expect(third.equals(first)).toBe(false);
    expect(third.length).toBe(first.length);
  });

  it('stores F16 on disk holding the f32 checkpoint rounded to half precision', async () => {
    const half = await initModel({ preset: 'bert-tiny', outDir: join(root, 'f16'), vocabSize: VOCAB, dtype: 'f16' });
    const halfFile = await SafetensorsFile.open(half.weightsPath);
    const fullFile = await SafetensorsFile.open(base.weightsPath);
    for (const name of halfFile.names()) {
      expect(halfFile.info(name)?.dtype, name).toBe('F16');
    }
    for (const name of ['embeddings.LayerNorm.weight', 'encoder.layer.1.attention.self.key.weight']) {
      const expected = f16ArrayToF32(f32ArrayToF16(fullFile.readFloat32(name)));
      expect(halfFile.readFloat32(name)).toEqual(expected);
    }
    expect((await readJson(half.configPath)).torch_dtype).toBe('float16');
    expect(half.parameterCount).toBe(base.parameterCount);
  });

  it('stores BF16 on disk when asked', async () => {
    const brain = await initModel({ preset: 'bert-tiny', outDir: join(root, 'bf16'), vocabSize: VOCAB, dtype: 'bf16' });
    const file = await SafetensorsFile.open(brain.weightsPath);
    expect(file.info('pooler.dense.weight')?.dtype).toBe('BF16');
    expect((await readJson(brain.configPath)).torch_dtype).toBe('bfloat16');
  });

  it('honours a maxPositions override in weights, config and tokenizer config', async () => {
    const short = await initModel({ preset: 'bert-tiny', outDir: join(root, 'short'), vocabSize: VOCAB, maxPositions: 64 });
    const file = await SafetensorsFile.open(short.weightsPath);
    expect(file.info('embeddings.position_embeddings.weight')?.shape).toEqual([64, H]);
    expect((await readJson(short.configPath)).max_position_embeddings).toBe(64);
    expect((await readJson(short.tokenizerConfigPath)).model_max_length).toBe(64);
  });

  it('rejects options that cannot describe a checkpoint', async () => {
    const outDir = join(root, 'invalid');
    await expect(initModel({ preset: 'bert-tiny', outDir, vocabSize: 50 })).rejects.toThrow(InitModelOptionsError);
    await expect(initModel({ preset: 'bert-tiny', outDir, numLabels: -1 })).rejects.toThrow(InitModelOptionsError);
    await expect(initModel({ preset: 'bert-tiny', outDir, maxPositions: 0 })).rejects.toThrow(InitModelOptionsError);
    await expect(initModel({ preset: 'bert-huge' as 'bert-tiny', outDir })).rejects.toThrow(InitModelOptionsError);
  });
});

describe('initModel tokenizer files', () => {
  it('writes a tokenizer.json that parses with the BERT WordPiece pipeline and the full vocabulary', async () => {
    const tokenizer = await readJson(base.tokenizerPath);
    expect(tokenizer.version).toBe('1.0');
    expect(tokenizer.truncation).toBeNull();
    expect(tokenizer.padding).toBeNull();
    expect(tokenizer.normalizer).toEqual({
      type: 'BertNormalizer',
      clean_text: true,
      handle_chinese_chars: true,
      strip_accents: null,
      lowercase: true,
    });
    expect(tokenizer.pre_tokenizer).toEqual({ type: 'BertPreTokenizer' });
    expect(tokenizer.decoder).toEqual({ type: 'WordPiece', prefix: '##', cleanup: true });

    const model = tokenizer.model as Record<string, unknown>;
    expect(model.type).toBe('WordPiece');
    expect(model.unk_token).toBe('[UNK]');
    expect(model.continuing_subword_prefix).toBe('##');
    expect(model.max_input_chars_per_word).toBe(100);
    const vocab = model.vocab as Record<string, number>;
    expect(Object.keys(vocab)).toHaveLength(VOCAB);
    expect(new Set(Object.values(vocab))).toEqual(new Set(Array.from({ length: VOCAB }, (_, id) => id)));
    expect(vocab['[PAD]']).toBe(0);
    expect(vocab['[unused0]']).toBe(1);
    expect(vocab['[unused98]']).toBe(99);
    expect(vocab['[UNK]']).toBe(100);
    expect(vocab['[CLS]']).toBe(101);
    expect(vocab['[SEP]']).toBe(102);
    expect(vocab['[MASK]']).toBe(103);
    for (const token of ['a', 'z', '0', '!', '##a', '##9', 'the', 'movie']) {
      expect(vocab[token], token).toBeTypeOf('number');
    }

    const added = tokenizer.added_tokens as Array<{ id: number; content: string; special: boolean }>;
    expect(added.map((t) => [t.id, t.content, t.special])).toEqual([
      [0, '[PAD]', true],
      [100, '[UNK]', true],
      [101, '[CLS]', true],
      [102, '[SEP]', true],
      [103, '[MASK]', true],
    ]);

    const post = tokenizer.post_processor as Record<string, unknown>;
    expect(post.type).toBe('TemplateProcessing');
    expect(post.single).toEqual([
      { SpecialToken: { id: '[CLS]', type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '[SEP]', type_id: 0 } },
    ]);
    expect((post.pair as unknown[]).slice(3)).toEqual([
      { Sequence: { id: 'B', type_id: 1 } },
      { SpecialToken: { id: '[SEP]', type_id: 1 } },
    ]);
    expect(post.special_tokens).toEqual({
      '[CLS]': { id: '[CLS]', ids: [101], tokens: ['[CLS]'] },
      '[SEP]': { id: '[SEP]', ids: [102], tokens: ['[SEP]'] },
    });
  });

  it('writes vocab.txt with one token per line, line number = id, matching tokenizer.json', async () => {
    const lines = (await readFile(base.vocabPath, 'utf8')).split('\n');
    expect(lines.at(-1)).toBe('');
    const tokens = lines.slice(0, -1);
    expect(tokens).toHaveLength(VOCAB);
    const vocab = ((await readJson(base.tokenizerPath)).model as { vocab: Record<string, number> }).vocab;
    tokens.forEach((token, id) => {
      if (vocab[token] !== id) expect([token, vocab[token]]).toEqual([token, id]);
    });
  });

  it('writes tokenizer_config.json for a lowercasing BertTokenizer', async () => {
    const config = await readJson(base.tokenizerConfigPath);
    expect(config.do_lower_case).toBe(true);
    expect(config.model_max_length).toBe(POSITIONS);
    expect(config.tokenizer_class).toBe('BertTokenizer');
    expect(config.cls_token).toBe('[CLS]');
    expect(config.sep_token).toBe('[SEP]');
    expect(config.unk_token).toBe('[UNK]');
    expect(config.pad_token).toBe('[PAD]');
    expect(config.mask_token).toBe('[MASK]');
  });
});

describe('full-size layouts', () => {
  it('lays out a 30522-token vocabulary like bert-base-uncased, with no duplicates', () => {
    const vocabulary = buildBertVocabulary(30522);
    expect(vocabulary).toHaveLength(30522);
    expect(new Set(vocabulary).size).toBe(30522);
    expect(vocabulary[SPECIAL_TOKEN_IDS.pad]).toBe('[PAD]');
    expect(vocabulary[SPECIAL_TOKEN_IDS.mask]).toBe('[MASK]');
    expect(vocabulary[104]).toBe('[unused99]');
    expect(vocabulary[998]).toBe('[unused993]');
    expect(vocabulary[999]).toBe('!');
  });

  it('counts bert-base parameters as transformers does (109,482,240 for BertModel)', () => {
    const count = (numLabels: number): number =>
      bertTensorLayout(PRESETS['bert-base'], numLabels).reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
    expect(count(0)).toBe(109_482_240);
    expect(count(2)).toBe(109_482_240 + 2 * 768 + 2);
  });
});
