import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SafetensorsFile } from '../../src/model/safetensors.js';
import { runCli } from '../helpers/cli.js';

let root: string;
let llama: string;
let bert: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-init-adapter-cli-'));
  llama = join(root, 'llama');
  bert = join(root, 'bert');
  expect((await runCli('init-model', '--preset', 'llama-tiny', '--out', llama, '--seed', '3')).code).toBe(0);
  expect((await runCli('init-model', '--preset', 'bert-tiny', '--out', bert, '--vocab-size', '300', '--max-positions', '64')).code).toBe(0);
});
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('petserve init-model with decoder presets', () => {
  it('writes a causal LM checkpoint and prints its size and special token ids', async () => {
    const out = join(root, 'gpt2');
    const r = await runCli('init-model', '--preset', 'gpt2-tiny', '--out', out, '--dtype', 'bf16', '--vocab-size', '400');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ out, preset: 'gpt2-tiny', vocab_size: 400, bos_token_id: 396, eos_token_id: 396 });
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ model_type: 'gpt2', torch_dtype: 'bfloat16', vocab_size: 400 });
    expect((await SafetensorsFile.open(join(out, 'model.safetensors'))).info('wte.weight')).toMatchObject({ dtype: 'BF16', shape: [400, 66] });
  });

  it('refuses --num-labels for a causal LM and names every preset for an unknown one', async () => {
    const labels = await runCli('init-model', '--preset', 'llama-tiny', '--out', join(root, 'x'), '--num-labels', '2');
    expect(labels.code).toBe(2);
    expect(labels.stderr).toMatch(/--num-labels applies to the BERT presets, not the causal LM 'llama-tiny'/);
    const unknown = await runCli('init-model', '--preset', 'llama-huge', '--out', join(root, 'x'));
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/bert-tiny, .*llama-tiny, llama-tiny-gqa4, qwen2-tiny, mistral-tiny, gpt2-tiny, bloom-tiny, llama-bench/);
  });
});

describe('petserve init-adapter', () => {
  it('writes a PEFT LoRA directory and prints a one-line JSON summary', async () => {
    const out = join(root, 'adapter');
    const r = await runCli(
      'init-adapter', '--model', llama, '--out', out, '--rank', '4', '--alpha', '8',
      '--target-modules', 'q_proj, k_proj,o_proj', '--rslora', '--modules-to-save', 'lm_head', '--seed', '2', '--dtype', 'f16',
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ out, rank: 4, alpha: 8, seed: 2, lora_modules: 9, saved_modules: 1, tensors: 19 });
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({
      r: 4,
      lora_alpha: 8,
      use_rslora: true,
      target_modules: ['q_proj', 'k_proj', 'o_proj'],
      modules_to_save: ['lm_head'],
      base_model_name_or_path: llama,
    });
    const file = await SafetensorsFile.open(join(out, 'adapter_model.safetensors'));
    expect(file.info('base_model.model.model.layers.2.self_attn.k_proj.lora_B.weight')).toMatchObject({ dtype: 'F16', shape: [36, 4] });
  });

  it.each([
    [['--rank', '0'], /--rank must be an integer >= 1, got '0'/],
    [['--rank', 'two'], /--rank must be an integer >= 1/],
    [['--rank', '2', '--target-modules', 'query,value'], /target module "query" matches no module of this llama model/],
    [['--rank', '2', '--target-modules', 'q_proj,,v_proj'], /--target-modules must be a comma-separated list/],
    [['--rank', '2', '--alpha', 'x'], /--alpha must be a number, got 'x'/],
    [['--rank', '2', '--dtype', 'bf16'], /--dtype must be f32 or f16, got 'bf16'/],
    [['--rank', '2', '--modules-to-save', 'q_proj', '--target-modules', 'q_proj'], /both LoRA targets and modules_to_save/],
  ])('exits 2 with a clear message for %j', async (args, message) => {
    const r = await runCli('init-adapter', '--model', llama, '--out', join(root, 'bad'), ...args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
  });

  it('exits 2 when --rank is missing, and 3 when the model is not a causal LM', async () => {
    const missing = await runCli('init-adapter', '--model', llama, '--out', join(root, 'bad'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--rank/);
    const encoder = await runCli('init-adapter', '--model', bert, '--out', join(root, 'bad'), '--rank', '2');
    expect(encoder.code).toBe(3);
    expect(encoder.stderr).toMatch(/model_type "bert" is not a supported causal LM/);
    const absent = await runCli('init-adapter', '--model', join(root, 'nowhere'), '--out', join(root, 'bad'), '--rank', '2');
    expect(absent.code).toBe(3);
    expect(absent.stderr).toMatch(/cannot read .*config\.json/);
  });
});
