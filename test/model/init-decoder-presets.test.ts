import { readFile, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DECODER_PRESET_NAMES, DECODER_PRESETS, type DecoderPresetName } from '../../src/model/decoder-presets.js';
import { initDecoderModel, type InitDecoderResult } from '../../src/model/init-decoder.js';
import { InitModelOptionsError } from '../../src/model/init-model.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from '../../src/util/f16.js';
import { Rng } from '../../src/util/random.js';
import { greedyDecode } from './decoder-forward-f64.js';

const TINY = DECODER_PRESET_NAMES.filter((p) => p !== 'llama-bench');

let root: string;
const written = new Map<DecoderPresetName, InitDecoderResult>();

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-init-decoder-'));
  for (const preset of DECODER_PRESET_NAMES) {
    written.set(preset, await initDecoderModel({ preset, outDir: join(root, preset), seed: 7 }));
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
}

function dir(preset: DecoderPresetName): string {
  return join(root, preset);
}

async function shapes(preset: DecoderPresetName): Promise<Map<string, number[]>> {
  const file = await SafetensorsFile.open(join(dir(preset), 'model.safetensors'));
  return new Map(file.names().map((name) => [name, file.info(name)!.shape]));
}

// Special token ids of a 512-token tokenizer: BPE vocabulary 0..507, then the four specials.
const ENDOFTEXT = 508;
const IM_END = 510;
const BOS = 511;

describe('decoder presets: config.json as transformers saves it', () => {
  it('writes LlamaForCausalLM keys for llama-tiny (GQA 6/3, head_dim 12, untied)', async () => {
    const config = await readJson(join(dir('llama-tiny'), 'config.json'));
    expect(config).toEqual({
      architectures: ['LlamaForCausalLM'],
      attention_bias: false,
      attention_dropout: 0,
      bos_token_id: BOS,
      eos_token_id: IM_END,
      head_dim: 12,
      hidden_act: 'silu',
      hidden_size: 72,
      initializer_range: 0.02,
      intermediate_size: 100,
      max_position_embeddings: 512,
      mlp_bias: false,
      model_type: 'llama',
      num_attention_heads: 6,
      num_hidden_layers: 3,
      num_key_value_heads: 3,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: null,
      rope_theta: 10000,
      tie_word_embeddings: false,
      torch_dtype: 'float32',
      transformers_version: expect.any(String) as unknown,
      use_cache: true,
      vocab_size: 512,
    });
    expect(Object.keys(config)).toEqual(Object.keys(config).sort());
  });

  it('writes llama3 rope_scaling for llama-tiny-gqa4, linear `type` scaling for mistral-tiny, tied biased qwen2-tiny', async () => {
    const gqa4 = await readJson(join(dir('llama-tiny-gqa4'), 'config.json'));
    expect(gqa4).toMatchObject({ hidden_size: 80, num_attention_heads: 8, num_key_value_heads: 2, head_dim: 10 });
    expect(gqa4['rope_scaling']).toEqual({
      factor: 8,
      high_freq_factor: 4,
      low_freq_factor: 1,
      original_max_position_embeddings: 64,
      rope_type: 'llama3',
    });
    expect(Object.keys(gqa4['rope_scaling'] as object)).toEqual(Object.keys(gqa4['rope_scaling'] as object).sort());

    const mistral = await readJson(join(dir('mistral-tiny'), 'config.json'));
    expect(mistral).toMatchObject({
      architectures: ['MistralForCausalLM'],
      model_type: 'mistral',
      rope_scaling: { type: 'linear', factor: 2 },
      sliding_window: null,
      tie_word_embeddings: false,
      head_dim: 16,
    });

    const qwen = await readJson(join(dir('qwen2-tiny'), 'config.json'));
    expect(qwen).toMatchObject({
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      hidden_size: 56,
      num_attention_heads: 4,
      num_key_value_heads: 4,
      tie_word_embeddings: true,
      use_sliding_window: false,
    });
    expect(qwen).not.toHaveProperty('head_dim'); // Qwen2Config derives it: 56 / 4 = 14
  });

  it('writes GPT2Config keys for gpt2-tiny', async () => {
    const config = await readJson(join(dir('gpt2-tiny'), 'config.json'));
    expect(config).toEqual({
      activation_function: 'gelu_new',
      architectures: ['GPT2LMHeadModel'],
      attn_pdrop: 0.1,
      bos_token_id: ENDOFTEXT,
      embd_pdrop: 0.1,
      eos_token_id: ENDOFTEXT,
      initializer_range: 0.02,
      layer_norm_epsilon: 1e-5,
      model_type: 'gpt2',
      n_embd: 66,
      n_head: 6,
      n_inner: null,
      n_layer: 2,
      n_positions: 256,
      reorder_and_upcast_attn: false,
      resid_pdrop: 0.1,
      scale_attn_by_inverse_layer_idx: false,
      scale_attn_weights: true,
      summary_activation: null,
      summary_first_dropout: 0.1,
      summary_proj_to_labels: true,
      summary_type: 'cls_index',
      summary_use_proj: true,
      torch_dtype: 'float32',
      transformers_version: expect.any(String) as unknown,
      use_cache: true,
      vocab_size: 512,
    });
  });

  it('writes BloomConfig keys for bloom-tiny (6 heads)', async () => {
    const config = await readJson(join(dir('bloom-tiny'), 'config.json'));
    expect(config).toEqual({
      apply_residual_connection_post_layernorm: false,
      architectures: ['BloomForCausalLM'],
      attention_dropout: 0,
      bos_token_id: ENDOFTEXT,
      eos_token_id: ENDOFTEXT,
      hidden_dropout: 0,
      hidden_size: 60,
      initializer_range: 0.02,
      layer_norm_epsilon: 1e-5,
      model_type: 'bloom',
      n_head: 6,
      n_layer: 2,
      pretraining_tp: 1,
      slow_but_exact: false,
      torch_dtype: 'float32',
      transformers_version: expect.any(String) as unknown,
      use_cache: true,
      vocab_size: 512,
    });
  });

  it('sizes llama-bench for a CPU run and gives it a 2000-token vocabulary', async () => {
    const config = await readJson(join(dir('llama-bench'), 'config.json'));
    expect(config).toMatchObject({
      hidden_size: 256,
      num_hidden_layers: 4,
      num_attention_heads: 8,
      num_key_value_heads: 4,
      intermediate_size: 688,
      vocab_size: 2000,
      bos_token_id: 1999,
      eos_token_id: 1998,
    });
    expect(written.get('llama-bench')!.parameterCount).toBeLessThan(5_000_000);
  });

  it('writes generation_config.json with bos and both end markers as eos', async () => {
    expect(await readJson(join(dir('llama-tiny'), 'generation_config.json'))).toEqual({
      bos_token_id: BOS,
      eos_token_id: [IM_END, ENDOFTEXT],
      transformers_version: expect.any(String) as unknown,
    });
    expect(await readJson(join(dir('gpt2-tiny'), 'generation_config.json'))).toMatchObject({
      bos_token_id: ENDOFTEXT,
      eos_token_id: [ENDOFTEXT, IM_END],
    });
  });

  it('writes tokenizer_config.json with bos/eos, model_max_length and a ChatML chat template', async () => {
    const llama = await readJson(join(dir('llama-tiny'), 'tokenizer_config.json'));
    expect(llama).toMatchObject({
      bos_token: '<s>',
      eos_token: '<|im_end|>',
      model_max_length: 512,
      clean_up_tokenization_spaces: false,
      tokenizer_class: 'PreTrainedTokenizerFast',
    });
    expect(llama['chat_template']).toContain("'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'");
    expect(llama['chat_template']).toContain("{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");
    expect(Object.keys(llama['added_tokens_decoder'] as object)).toEqual(['508', '509', '510', '511']);
    const gpt2 = await readJson(join(dir('gpt2-tiny'), 'tokenizer_config.json'));
    expect(gpt2).toMatchObject({ bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', model_max_length: 256, tokenizer_class: 'GPT2Tokenizer' });
  });
});

describe('decoder presets: tensors as Hugging Face names and shapes them', () => {
  it('llama-tiny: model.* Linear [out, in] weights, no biases, separate lm_head', async () => {
    const expected = new Map<string, number[]>([['model.embed_tokens.weight', [512, 72]], ['model.norm.weight', [72]], ['lm_head.weight', [512, 72]]]);
    for (let l = 0; l < 3; l++) {
      const p = `model.layers.${l}.`;
      expected.set(`${p}self_attn.q_proj.weight`, [72, 72]);
      expected.set(`${p}self_attn.k_proj.weight`, [36, 72]);
      expected.set(`${p}self_attn.v_proj.weight`, [36, 72]);
      expected.set(`${p}self_attn.o_proj.weight`, [72, 72]);
      expected.set(`${p}mlp.gate_proj.weight`, [100, 72]);
      expected.set(`${p}mlp.up_proj.weight`, [100, 72]);
      expected.set(`${p}mlp.down_proj.weight`, [72, 100]);
      expected.set(`${p}input_layernorm.weight`, [72]);
      expected.set(`${p}post_attention_layernorm.weight`, [72]);
    }
    expect(await shapes('llama-tiny')).toEqual(expected);
  });

  it('llama-tiny-gqa4: 8 query heads, 2 KV heads of 10', async () => {
    const s = await shapes('llama-tiny-gqa4');
    expect(s.get('model.layers.1.self_attn.q_proj.weight')).toEqual([80, 80]);
    expect(s.get('model.layers.1.self_attn.k_proj.weight')).toEqual([20, 80]);
    expect(s.get('model.layers.1.self_attn.v_proj.weight')).toEqual([20, 80]);
  });

  it('qwen2-tiny: q/k/v biases, no o_proj bias, no lm_head (tied)', async () => {
    const s = await shapes('qwen2-tiny');
    for (const proj of ['q', 'k', 'v']) expect(s.get(`model.layers.0.self_attn.${proj}_proj.bias`)).toEqual([56]);
    expect(s.has('model.layers.0.self_attn.o_proj.bias')).toBe(false);
    expect(s.has('lm_head.weight')).toBe(false);
    expect(s.get('model.embed_tokens.weight')).toEqual([512, 56]);
  });

  it('gpt2-tiny: hub GPT-2 names, Conv1D [in, out] weights, n_inner = 4 * n_embd, no lm_head', async () => {
    const expected = new Map<string, number[]>([
      ['wte.weight', [512, 66]],
      ['wpe.weight', [256, 66]],
      ['ln_f.weight', [66]],
      ['ln_f.bias', [66]],
    ]);
    for (let l = 0; l < 2; l++) {
      const p = `h.${l}.`;
      for (const ln of ['ln_1', 'ln_2']) {
        expected.set(`${p}${ln}.weight`, [66]);
        expected.set(`${p}${ln}.bias`, [66]);
      }
      expected.set(`${p}attn.c_attn.weight`, [66, 198]);
      expected.set(`${p}attn.c_attn.bias`, [198]);
      expected.set(`${p}attn.c_proj.weight`, [66, 66]);
      expected.set(`${p}attn.c_proj.bias`, [66]);
      expected.set(`${p}mlp.c_fc.weight`, [66, 264]);
      expected.set(`${p}mlp.c_fc.bias`, [264]);
      expected.set(`${p}mlp.c_proj.weight`, [264, 66]);
      expected.set(`${p}mlp.c_proj.bias`, [66]);
    }
    expect(await shapes('gpt2-tiny')).toEqual(expected);
  });

  it('bloom-tiny: hub BLOOM names, fused query_key_value [3H, H], no lm_head', async () => {
    const expected = new Map<string, number[]>([
      ['word_embeddings.weight', [512, 60]],
      ['word_embeddings_layernorm.weight', [60]],
      ['word_embeddings_layernorm.bias', [60]],
      ['ln_f.weight', [60]],
      ['ln_f.bias', [60]],
    ]);
    for (let l = 0; l < 2; l++) {
      const p = `h.${l}.`;
      for (const ln of ['input_layernorm', 'post_attention_layernorm']) {
        expected.set(`${p}${ln}.weight`, [60]);
        expected.set(`${p}${ln}.bias`, [60]);
      }
      expected.set(`${p}self_attention.query_key_value.weight`, [180, 60]);
      expected.set(`${p}self_attention.query_key_value.bias`, [180]);
      expected.set(`${p}self_attention.dense.weight`, [60, 60]);
      expected.set(`${p}self_attention.dense.bias`, [60]);
      expected.set(`${p}mlp.dense_h_to_4h.weight`, [240, 60]);
      expected.set(`${p}mlp.dense_h_to_4h.bias`, [240]);
      expected.set(`${p}mlp.dense_4h_to_h.weight`, [60, 240]);
      expected.set(`${p}mlp.dense_4h_to_h.bias`, [60]);
    }
    expect(await shapes('bloom-tiny')).toEqual(expected);
  });

  it('reports the parameter count of the tensors it wrote, with format=pt metadata', async () => {
    for (const preset of DECODER_PRESET_NAMES) {
      const file = await SafetensorsFile.open(join(dir(preset), 'model.safetensors'));
      const count = file.names().reduce((n, name) => n + file.info(name)!.shape.reduce((a, b) => a * b, 1), 0);
      expect(written.get(preset)!.parameterCount, preset).toBe(count);
      expect(file.metadata).toEqual({ format: 'pt' });
    }
  });
});

describe('decoder presets: values', () => {
  it('is deterministic given the seed, and a different seed changes the weights', async () => {
    const again = await initDecoderModel({ preset: 'gpt2-tiny', outDir: join(root, 'gpt2-again'), seed: 7 });
    const other = await initDecoderModel({ preset: 'gpt2-tiny', outDir: join(root, 'gpt2-other'), seed: 8 });
    const bytes = async (path: string): Promise<Buffer> => readFile(path);
    expect((await bytes(again.weightsPath)).equals(await bytes(written.get('gpt2-tiny')!.weightsPath))).toBe(true);
    expect((await bytes(again.tokenizerPath)).equals(await bytes(written.get('gpt2-tiny')!.tokenizerPath))).toBe(true);
    expect((await bytes(other.weightsPath)).equals(await bytes(again.weightsPath))).toBe(false);
  });

  it.each([
    ['f16', 'F16', 'float16'],
    ['bf16', 'BF16', 'bfloat16'],
  ] as const)('stores %s tensors as %s, rounded from the f32 values of the same seed', async (dtype, stored, torchDtype) => {
    const result = await initDecoderModel({ preset: 'qwen2-tiny', outDir: join(root, `qwen-${dtype}`), seed: 7, dtype });
    expect((await readJson(result.configPath))['torch_dtype']).toBe(torchDtype);
    const half = await SafetensorsFile.open(result.weightsPath);
    const full = await SafetensorsFile.open(written.get('qwen2-tiny')!.weightsPath);
    expect(half.names().every((n) => half.info(n)!.dtype === stored)).toBe(true);
    const name = 'model.layers.1.self_attn.k_proj.bias';
    const round = dtype === 'f16' ? (a: Float32Array) => f16ArrayToF32(f32ArrayToF16(a)) : (a: Float32Array) => bf16ArrayToF32(f32ArrayToBf16(a));
    expect(half.readFloat32(name)).toEqual(round(full.readFloat32(name)));
  });

  it.each(TINY.map((p) => [p]))('%s: greedy decoding of random prompts does not collapse onto one token', async (preset) => {
    const vocab = DECODER_PRESETS[preset].vocabSize;
    for (const seed of [1, 2]) {
      const rng = new Rng(seed);
      const prompt = Array.from({ length: 5 }, () => rng.int(0, vocab - 4));
      const { firstLogits, generated } = await greedyDecode(dir(preset), prompt, 12);
      expect(new Set(generated).size, `${preset} prompt ${prompt.join(',')} -> ${generated.join(',')}`).toBeGreaterThanOrEqual(4);
      const mean = firstLogits.reduce((a, b) => a + b, 0) / firstLogits.length;
      const std = Math.sqrt(firstLogits.reduce((a, b) => a + (b - mean) ** 2, 0) / firstLogits.length);
      expect(std).toBeGreaterThan(0.5);
      expect(std).toBeLessThan(5);
    }
  });
});

describe('decoder presets: options', () => {
  it('--vocab-size sets the tokenizer size and vocab_size together; --max-positions the position table', async () => {
    const result = await initDecoderModel({ preset: 'gpt2-tiny', outDir: join(root, 'gpt2-small'), vocabSize: 300, maxPositions: 32 });
    expect(result.vocabSize).toBe(300);
    expect(result.specialTokenIds).toEqual({ '<|endoftext|>': 296, '<|im_start|>': 297, '<|im_end|>': 298, '<s>': 299 });
    const config = await readJson(result.configPath);
    expect(config).toMatchObject({ vocab_size: 300, n_positions: 32, bos_token_id: 296, eos_token_id: 296 });
    const s = await SafetensorsFile.open(result.weightsPath);
    expect(s.info('wte.weight')!.shape).toEqual([300, 66]);
    expect(s.info('wpe.weight')!.shape).toEqual([32, 66]);
  });

  it('refuses a vocabulary below the byte symbols + special tokens, or beyond what the corpus yields', async () => {
    await expect(initDecoderModel({ preset: 'llama-tiny', outDir: join(root, 'x'), vocabSize: 259 })).rejects.toThrow(InitModelOptionsError);
    await expect(initDecoderModel({ preset: 'llama-tiny', outDir: join(root, 'x'), vocabSize: 100_000 })).rejects.toThrow(
      /more than the built-in BPE corpus yields/,
    );
  });
});
