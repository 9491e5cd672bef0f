import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadRefBert, refBertForward } from '../reference/bert-f64.js';
import { expectClose, flattenNested } from '../reference/compare.js';
import { runCli } from '../helpers/cli.js';

let root: string;
let model: string;

const cli = runCli;

beforeAll(async () => {
  process.env['PETSERVE_LOG_LEVEL'] = 'warn'; // keep device-ready logs out of the test output
  root = await mkdtemp(join(tmpdir(), 'petserve-cli-'));
  model = join(root, 'm');
});
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('petserve CLI', () => {
  it('init-model writes a checkpoint and predict prints hidden states, pooler output and logits matching the reference', async () => {
    const init = await cli('init-model', '--preset', 'bert-tiny', '--out', model, '--num-labels', '3', '--seed', '5', '--vocab-size', '400');
    expect(init.code).toBe(0);
    expect(JSON.parse(init.stdout)).toMatchObject({ preset: 'bert-tiny' });

    const ids = [[101, 7, 9, 102], [101, 5, 102]];
    const r = await cli('predict', '--model', model, '--input-ids', JSON.stringify(ids), '--config', 'configs/default.yaml');
    expect(r.stderr).not.toMatch(/petserve: /);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { last_hidden_state: number[][][]; pooler_output: number[][]; logits: number[][] };
    expect(out.last_hidden_state.map((s) => s.length)).toEqual([4, 3]);
    const want = refBertForward(loadRefBert(model), ids);
    expectClose(flattenNested(out.logits), flattenNested(want.logits!), 1e-4, 'cli logits');
    expectClose(flattenNested(out.last_hidden_state), flattenNested(want.lastHiddenState), 1e-4, 'cli hidden');
  });

  it('--input-ids-file reads the same JSON', async () => {
    const f = join(root, 'ids.json');
    await writeFile(f, '[[101, 3, 102]]');
    const r = await cli('predict', '--model', model, '--input-ids-file', f);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { logits: number[][] }).logits).toHaveLength(1);
  });

  it('bad input gives a clear message and a non-zero exit code', async () => {
    const cases: [string[], number, RegExp][] = [
      [['predict', '--model', model, '--input-ids', '[[1,2'], 2, /not valid JSON/],
      [['predict', '--model', model, '--input-ids', '[]'], 2, /non-empty JSON array/],
      [['predict', '--model', model, '--input-ids', '[[1, "a"]]'], 2, /\[0\]\[1\]: "a" is not an integer/],
      [['predict', '--model', model, '--input-ids', '[[1, 400]]'], 2, /400 is not a token id in 0\.\.399/],
      [['predict', '--model', model], 2, /exactly one of --input-ids or --input-ids-file/],
      [['predict', '--model', join(root, 'absent'), '--input-ids', '[[1]]'], 3, /config\.json/],
      [['predict', '--model', model, '--input-ids', '[[1]]', '--dtype', 'f64'], 2, /model\.dtype/],
      [['init-model', '--preset', 'bert-huge', '--out', join(root, 'x')], 2, /--preset must be one of/],
      [['init-model', '--preset', 'bert-tiny', '--out', join(root, 'x'), '--seed', 'abc'], 2, /--seed must be an integer/],
    ];
    for (const [args, code, message] of cases) {
      const r = await cli(...args);
      expect({ args, code: r.code }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    }
  });

  it('an unknown command or missing required option is a usage error', async () => {
    expect((await cli('frobnicate')).code).toBe(2);
    expect((await cli('init-model', '--preset', 'bert-tiny')).code).toBe(2);
  });
});
