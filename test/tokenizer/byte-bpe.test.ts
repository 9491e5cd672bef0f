import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BYTE_TO_SYMBOL, buildDecoderTokenizer, decoderTokenizerJson, trainByteLevelBpe } from '../../src/model/byte-bpe.js';
import { initDecoderModel } from '../../src/model/init-decoder.js';
import { TextTokenizer } from '../../src/tokenizer/text-tokenizer.js';

let root: string;
const tokenizers = new Map<string, Tokenizer>();
const PRESETS = ['llama-tiny', 'qwen2-tiny', 'mistral-tiny', 'gpt2-tiny', 'bloom-tiny'] as const;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-byte-bpe-'));
  for (const preset of PRESETS) {
    const out = join(root, preset);
    await initDecoderModel({ preset, outDir: out, vocabSize: preset === 'gpt2-tiny' ? 700 : undefined });
    const json = JSON.parse(await readFile(join(out, 'tokenizer.json'), 'utf8')) as object;
    const config = JSON.parse(await readFile(join(out, 'tokenizer_config.json'), 'utf8')) as object;
    tokenizers.set(preset, new Tokenizer(json, config));
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const TEXTS = [
  'The quick brown fox jumps over the lazy dog.',
  "It's 2024; don't panic!  Two  spaces,\ttabs\nand\n\nnewlines ",
  'Café, naïve, façade, Ångström, Straße',
  'Emoji 😀🧪👩‍💻 and CJK 中文字 and Cyrillic кириллица',
  ' leading and trailing spaces ',
];

describe('byte-level BPE tokenizer.json', () => {
  it.each(TEXTS.map((t) => [t]))('round-trips %j through encode/decode with @huggingface/tokenizers', (text) => {
    for (const preset of PRESETS) {
      const tokenizer = tokenizers.get(preset)!;
      const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
      expect(tokenizer.decode(ids), preset).toBe(text);
      // With the post-processor's tokens, skipping specials gives the text back too.
      expect(tokenizer.decode(tokenizer.encode(text).ids, { skip_special_tokens: true }), preset).toBe(text);
    }
  });

  it('merges common words into single tokens (the vocabulary is learned, not just bytes)', () => {
    const tokenizer = tokenizers.get('llama-tiny')!;
    expect(tokenizer.encode(' the', { add_special_tokens: false }).ids).toHaveLength(1);
    const sentence = 'The quick brown fox jumps over the lazy dog and the model answers.';
    expect(tokenizer.encode(sentence, { add_special_tokens: false }).ids.length).toBeLessThan(sentence.length / 2);
  });

  it('puts the 256 byte symbols first in GPT-2 order, then merges, then the special tokens', () => {
    const tokenizer = tokenizers.get('llama-tiny')!;
    expect(tokenizer.token_to_id('!')).toBe(0);
    expect(tokenizer.token_to_id('ÿ')).toBe(187);
    expect(tokenizer.token_to_id(BYTE_TO_SYMBOL[0]!)).toBe(188); // 'Ā'
    expect(tokenizer.token_to_id('Ġ')).toBe(188 + 32); // the space byte
    expect(BYTE_TO_SYMBOL[32]).toBe('Ġ');
    expect(BYTE_TO_SYMBOL[10]).toBe('Ċ');
    expect(tokenizer.token_to_id('<|endoftext|>')).toBe(508);
    expect(tokenizer.token_to_id('<|im_start|>')).toBe(509);
    expect(tokenizer.token_to_id('<|im_end|>')).toBe(510);
    expect(tokenizer.token_to_id('<s>')).toBe(511);
  });

  it('matches special tokens inside text as single ids (ChatML)', () => {
    const tokenizer = tokenizers.get('qwen2-tiny')!;
    const ids = tokenizer.encode('<|im_start|>user\nhi<|im_end|>\n', { add_special_tokens: false }).ids;
    expect(ids[0]).toBe(509);
    expect(ids).toContain(510);
    expect(ids.filter((id: number) => id >= 508)).toEqual([509, 510]);
  });

  it('prepends <s> through the post-processor for the Llama-style presets only', () => {
    for (const preset of ['llama-tiny', 'qwen2-tiny', 'mistral-tiny'] as const) {
      const ids = tokenizers.get(preset)!.encode('hello').ids;
      expect(ids[0], preset).toBe(511);
      expect(ids.slice(1)).toEqual(tokenizers.get(preset)!.encode('hello', { add_special_tokens: false }).ids);
    }
    for (const preset of ['gpt2-tiny', 'bloom-tiny'] as const) {
      const tokenizer = tokenizers.get(preset)!;
      expect(tokenizer.encode('hello').ids, preset).toEqual(tokenizer.encode('hello', { add_special_tokens: false }).ids);
    }
  });

  it('loads through the server tokenizer with the bos prefix learned from the template', async () => {
    const llama = (await TextTokenizer.load(join(root, 'llama-tiny')))!;
    expect(llama.modelMaxLength).toBe(512);
    const encoded = llama.encode('The quick brown fox jumps over the lazy dog.', { maxLength: 4 });
    expect(encoded.inputIds).toHaveLength(4);
    expect(encoded.inputIds[0]).toBe(511);
    expect(encoded.truncated).toBe(true);
    const gpt2 = (await TextTokenizer.load(join(root, 'gpt2-tiny')))!;
    expect(gpt2.modelMaxLength).toBe(256);
    expect(gpt2.tokenToId('<|endoftext|>')).toBe(696);
  });

  it('is deterministic: the same size trains the same merges', () => {
    const a = trainByteLevelBpe('low lower lowest newer wider', 270);
    const b = trainByteLevelBpe('low lower lowest newer wider', 270);
    expect(a).toEqual(b);
    expect(a.merges[0]).toEqual(['e', 'r']); // 3 times, tied with 'l o' and 'o w': the smaller pair text wins
    expect(JSON.stringify(decoderTokenizerJson(buildDecoderTokenizer(400), '<s>'))).toBe(
      JSON.stringify(decoderTokenizerJson(buildDecoderTokenizer(400), '<s>')),
    );
  });

  it('stops early when the corpus has no pair left', () => {
    const bpe = trainByteLevelBpe('ab ab', 1000);
    expect(bpe.merges).toEqual([
      ['a', 'b'],
      ['Ġ', 'ab'],
    ]);
    expect(bpe.vocab).toHaveLength(258);
  });
});
