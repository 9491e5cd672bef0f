// A GPT-2 style byte-level BPE tokenizer for the random decoder checkpoints,
// written as the `tokenizers` library's tokenizer.json. Merges are learned
// from a frozen built-in corpus (./bpe-corpus.ts), so the vocabulary depends
// only on its size and every run writes the same file.
//
// Byte-level means every UTF-8 byte is a base symbol (GPT-2's bytes_to_unicode
// maps the 256 bytes to printable characters), so any text encodes without an
// unknown token and decodes back to itself.

import { BPE_TRAINING_CORPUS } from './bpe-corpus.js';

/** The special tokens every decoder checkpoint's tokenizer carries, in id order after the BPE vocabulary. */
export const DECODER_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<s>'] as const;
export type DecoderSpecialToken = (typeof DECODER_SPECIAL_TOKENS)[number];

const BYTE_SYMBOLS = 256;
/** The smallest tokenizer: the 256 byte symbols and the special tokens, no merges. */
export const MIN_DECODER_VOCAB_SIZE = BYTE_SYMBOLS + DECODER_SPECIAL_TOKENS.length;

// GPT-2's pre-tokenization regex (the ByteLevel pre-tokenizer with
// use_regex: true): contractions, letter runs, digit runs and punctuation runs,
// each with at most one leading space, then whitespace. Training splits the
// corpus the same way so that no merge crosses a piece boundary.
const GPT2_PIECE_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
 * other 68 are shifted to U+0100.. so that no symbol is whitespace or a
 * control character. Index = byte; the array order of `BYTE_SYMBOL_ORDER` is
 * GPT-2's vocabulary order for the first 256 ids.
 */
export const BYTE_TO_SYMBOL: readonly string[] = buildBytesToUnicode();
const BYTE_SYMBOL_ORDER: readonly number[] = byteOrder();

function printableBytes(): number[] {
  const ranges: Array<[number, number]> = [
    [0x21, 0x7e], // '!'..'~'
    [0xa1, 0xac], // '¡'..'¬'
    [0xae, 0xff], // '®'..'ÿ'
  ];
  return ranges.flatMap(([lo, hi]) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i));
}

function buildBytesToUnicode(): string[] {
  const printable = new Set(printableBytes());
  const symbols = new Array<string>(BYTE_SYMBOLS);
  let shifted = 0;
  for (let byte = 0; byte < BYTE_SYMBOLS; byte++) {
    symbols[byte] = String.fromCharCode(printable.has(byte) ? byte : BYTE_SYMBOLS + shifted++);
  }
  return symbols;
}

function byteOrder(): number[] {
  const printable = printableBytes();
  const rest = Array.from({ length: BYTE_SYMBOLS }, (_, b) => b).filter((b) => !printable.includes(b));
  return [...printable, ...rest];
}

export interface ByteLevelBpe {
  /** Token string by id (byte symbols first, then one per merge that made a new string). */
  vocab: string[];
  /** Merges in priority order. */
  merges: Array<[string, string]>;
}

/**
 * Learn merges from `corpus` until the vocabulary holds `bpeVocabSize` tokens
 * or no adjacent pair is left. Each step merges the most frequent pair,
 * ties broken by the pair's text, so training is deterministic.
 */
export function trainByteLevelBpe(corpus: string, bpeVocabSize: number): ByteLevelBpe {
  const vocab = BYTE_SYMBOL_ORDER.map((byte) => BYTE_TO_SYMBOL[byte]!);
  const known = new Set(vocab);
  const merges: Array<[string, string]> = [];

  const wordCounts = new Map<string, number>();
  const encoder = new TextEncoder();
  for (const piece of corpus.match(GPT2_PIECE_PATTERN) ?? []) {
    const symbols = Array.from(encoder.encode(piece), (byte) => BYTE_TO_SYMBOL[byte]!).join('');
    wordCounts.set(symbols, (wordCounts.get(symbols) ?? 0) + 1);
  }
  // Symbols never contain ' ' (space is byte symbol 'Ġ'), so it separates pair keys.
  const words = [...wordCounts].map(([text, count]) => ({ symbols: Array.from(text), count }));

  while (vocab.length < bpeVocabSize) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === undefined) break;
    const [left, right] = best.split(' ') as [string, string];
    const merged = left + right;
    merges.push([left, right]);
    // Two merges can spell the same string ("ab"+"c", "a"+"bc"): one token.
    if (!known.has(merged)) {
      known.add(merged);
      vocab.push(merged);
    }
    for (const word of words) {
      const out: string[] = [];
      for (let i = 0; i < word.symbols.length; i++) {
        if (i + 1 < word.symbols.length && word.symbols[i] === left && word.symbols[i + 1] === right) {
          out.push(merged);
          i++;
        } else {
          out.push(word.symbols[i]!);
        }
      }
      word.symbols = out;
    }
  }
  return { vocab, merges };
}

export interface DecoderTokenizer {
  bpe: ByteLevelBpe;
  specialTokenIds: Readonly<Record<DecoderSpecialToken, number>>;
  /** BPE vocabulary plus special tokens: the model's vocab_size. */
  vocabSize: number;
}

const tokenizerCache = new Map<number, DecoderTokenizer>();

/**
 * The decoder tokenizer of (at most) `vocabSize` tokens in all: BPE
 * vocabulary first, then the special tokens. When the corpus runs out of
 * pairs first the tokenizer is smaller; `vocabSize` of the result is exact.
 */
export function buildDecoderTokenizer(vocabSize: number): DecoderTokenizer {
  if (!Number.isSafeInteger(vocabSize) || vocabSize < MIN_DECODER_VOCAB_SIZE) {
    throw new RangeError(`decoder vocabulary size must be an integer >= ${MIN_DECODER_VOCAB_SIZE}, got ${vocabSize}`);
  }
  const cached = tokenizerCache.get(vocabSize);
  if (cached !== undefined) return cached;
  const bpe = trainByteLevelBpe(BPE_TRAINING_CORPUS, vocabSize - DECODER_SPECIAL_TOKENS.length);
  const specialTokenIds = Object.fromEntries(DECODER_SPECIAL_TOKENS.map((token, i) => [token, bpe.vocab.length + i])) as Record<
    DecoderSpecialToken,
    number
  >;
  const tokenizer = { bpe, specialTokenIds, vocabSize: bpe.vocab.length + DECODER_SPECIAL_TOKENS.length };
  tokenizerCache.set(vocabSize, tokenizer);
  return tokenizer;
}

function addedToken(id: number, content: string): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/**
 * tokenizer.json as the `tokenizers` library (>= 0.20) saves a GPT-2 style
 * tokenizer. `bosToken`: a TemplateProcessing post-processor that prepends it
 * (the Llama convention); null: GPT-2's ByteLevel post-processor, which adds
 * nothing.
 */
export function decoderTokenizerJson(tokenizer: DecoderTokenizer, bosToken: DecoderSpecialToken | null): Record<string, unknown> {
  const postProcessor =
    bosToken === null
      ? { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true }
      : {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bosToken, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: bosToken, type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: bosToken, type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: {
            [bosToken]: { id: bosToken, ids: [tokenizer.specialTokenIds[bosToken]], tokens: [bosToken] },
          },
        };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: DECODER_SPECIAL_TOKENS.map((token) => addedToken(tokenizer.specialTokenIds[token], token)),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: postProcessor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(tokenizer.bpe.vocab.map((token, id) => [token, id])),
      merges: tokenizer.bpe.merges,
    },
  };
}
