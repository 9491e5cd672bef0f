import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initModel } from '../../src/model/init-model.js';
import { TextTokenizer } from '../../src/tokenizer/text-tokenizer.js';
import { CheckpointError } from '../../src/util/errors.js';

let root: string;
let tokenizer: TextTokenizer;
const CLS = 101;
const SEP = 102;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-tokenizer-'));
  await initModel({ preset: 'bert-tiny', outDir: join(root, 'model'), vocabSize: 2000, maxPositions: 32 });
  tokenizer = (await TextTokenizer.load(join(root, 'model')))!;
});
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('text tokenizer (the checkpoint tokenizer.json)', () => {
  it('adds [CLS] … [SEP], lowercases, and splits words into the vocabulary pieces', async () => {
    const vocab = (await readFile(join(root, 'model', 'vocab.txt'), 'utf8')).split('\n');
    const enc = tokenizer.encode('The MOVIE was great!');
    expect(enc.inputIds[0]).toBe(CLS);
    expect(enc.inputIds[enc.inputIds.length - 1]).toBe(SEP);
    expect(enc.inputIds.slice(1, -1).map((id) => vocab[id])).toEqual(['the', 'movie', 'was', 'great', '!']);
    expect(enc.tokenTypeIds).toEqual(enc.inputIds.map(() => 0));
    expect(enc.truncated).toBe(false);
    expect(tokenizer.encode('the movie WAS great!').inputIds).toEqual(enc.inputIds);
  });

  it('reads model_max_length from tokenizer_config.json', () => {
    expect(tokenizer.modelMaxLength).toBe(32);
  });

  it('truncates to exactly maxLength, keeping the special tokens at both ends', () => {
    const text = Array.from({ length: 50 }, (_, i) => ['good', 'bad', 'movie'][i % 3]).join(' ');
    const full = tokenizer.encode(text);
    expect(full.inputIds.length).toBe(52);
    const cut = tokenizer.encode(text, { maxLength: 10 });
    expect(cut.truncated).toBe(true);
    expect(cut.inputIds).toEqual([...full.inputIds.slice(0, 9), SEP]);
    expect(cut.tokenTypeIds).toHaveLength(10);
    // Short enough already: untouched.
    expect(tokenizer.encode('good', { maxLength: 10 })).toMatchObject({ inputIds: [CLS, expect.any(Number), SEP], truncated: false });
    // A limit below the special tokens cannot keep them all: plain cut.
    expect(tokenizer.encode(text, { maxLength: 1 }).inputIds).toEqual([CLS]);
  });

  it('is null for a checkpoint without tokenizer.json and refuses a broken one', async () => {
    expect(await TextTokenizer.load(join(root, 'no-such-dir'))).toBeNull();
    const broken = join(root, 'broken');
    await initModel({ preset: 'bert-tiny', outDir: broken, vocabSize: 200, maxPositions: 16 });
    await writeFile(join(broken, 'tokenizer.json'), '{"model": ');
    await expect(TextTokenizer.load(broken)).rejects.toBeInstanceOf(CheckpointError);
  });

  it("treats transformers' 'unknown length' sentinel as no limit", async () => {
    const dir = join(root, 'sentinel');
    await initModel({ preset: 'bert-tiny', outDir: dir, vocabSize: 200, maxPositions: 16 });
    const cfg = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, model_max_length: 1e30 }));
    expect((await TextTokenizer.load(dir))!.modelMaxLength).toBeNull();
  });
});
