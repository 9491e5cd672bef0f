import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { loadRefDecoder } from '../reference/decoder-f64.js';

let root: string;
let model: string;
let adapter: string;
let bert: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-generate-cli-'));
  model = join(root, 'gpt2');
  adapter = join(root, 'lora');
  bert = join(root, 'bert');
  expect((await runCli('init-model', '--preset', 'gpt2-tiny', '--out', model, '--seed', '5')).code).toBe(0);
  expect((await runCli('init-adapter', '--model', model, '--out', adapter, '--rank', '6', '--target-modules', 'c_attn,c_fc')).code).toBe(0);
  expect((await runCli('init-model', '--preset', 'bert-tiny', '--out', bert, '--vocab-size', '300', '--max-positions', '64')).code).toBe(0);
}, 120_000);
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('petserve generate', () => {
  it('--requests: one JSON line per request in input order, token ids equal to the reference greedy decode', async () => {
    const lines = [
      { task: 'a', prompt_ids: [10, 20, 30, 40], max_tokens: 12, ignore_eos: true },
      { prompt_ids: [7, 8], max_tokens: 5, ignore_eos: true },
      { task: 'a', prompt: 'Hello world', max_tokens: 4, ignore_eos: true },
    ];
    const file = join(root, 'req.jsonl');
    await writeFile(file, lines.map((l) => JSON.stringify(l)).join('\n'));
    const r = await runCli('generate', '--model', model, '--task', `a=${adapter}`, '--requests', file);
    expect(r.code, r.stderr).toBe(0);
    const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { task: string | null; token_ids: number[]; finish_reason: string; usage: { prompt_tokens: number; completion_tokens: number } });
    expect(out.map((o) => o.task)).toEqual(['a', null, 'a']);
    expect(out[0]!.token_ids).toEqual(loadRefDecoder(model, adapter).greedy([10, 20, 30, 40], 12));
    expect(out[1]!.token_ids).toEqual(loadRefDecoder(model).greedy([7, 8], 5));
    expect(out.map((o) => o.finish_reason)).toEqual(['length', 'length', 'length']);
    expect(out[2]!.usage.completion_tokens).toBe(4);
  }, 120_000);

  it('--prompt streams text to stdout and prints usage to stderr', async () => {
    const r = await runCli('generate', '--model', model, '--prompt', 'Once upon', '--max-tokens', '6', '--temperature', '0.8', '--seed', '3');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.endsWith('\n')).toBe(true);
    expect(r.stderr).toMatch(/"usage":\{"prompt_tokens":\d+,"completion_tokens":\d+/);
  }, 120_000);

  it('bad input exits non-zero with a message naming the line or flag', async () => {
    const file = join(root, 'bad.jsonl');
    await writeFile(file, '{"prompt_ids":[1,2]}\n{"task":"zzz","prompt":"x"}\n');
    const unknownTask = await runCli('generate', '--model', model, '--requests', file);
    expect(unknownTask.code).toBe(2);
    expect(unknownTask.stderr).toMatch(/bad\.jsonl:2: task 'zzz' was not given with --task/);
    await writeFile(file, '{"prompt_ids":[1,2],"max_tokens":-1}\n');
    expect((await runCli('generate', '--model', model, '--requests', file)).stderr).toMatch(/bad\.jsonl:1: max_tokens/);
    const both = await runCli('generate', '--model', model);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/give exactly one of --prompt or --requests/);
    const encoder = await runCli('generate', '--model', bert, '--prompt', 'x');
    expect(encoder.code).toBe(3);
    expect(encoder.stderr).toMatch(/model_type 'bert' is an encoder; generation supports llama/);
    const longPrompt = await runCli('generate', '--model', model, '--prompt', 'word '.repeat(300), '--max-tokens', '4');
    expect(longPrompt.code).not.toBe(0);
    expect(longPrompt.stderr).toMatch(/exceeds the model's context of 256 tokens/);
  }, 120_000);
});
