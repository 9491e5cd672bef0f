// Text → token ids for the HTTP and queue layers, through @huggingface/tokenizers
// reading the checkpoint's own tokenizer.json (normalisation, lowercasing,
// WordPiece and the [CLS] … [SEP] template all come from that file, so a
// real Hugging Face checkpoint tokenizes exactly as transformers would).

import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { readCheckpointJson } from '../model/checkpoint.js';
import { CheckpointError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';

export interface EncodedText {
  inputIds: number[];
  tokenTypeIds: number[];
  /** True when the text was cut to fit `maxLength`. */
  truncated: boolean;
}

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

/**
 * A checkpoint's tokenizer. Truncation is ours because tokenizers.js has none:
 * the special tokens the post-processor adds (prefix/suffix, learned once from
 * a probe) are kept and only the text's own tokens are cut, as transformers'
 * `truncation=True` does for a single sequence.
 */
export class TextTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    /** Longest sequence the tokenizer declares (tokenizer_config model_max_length), if any. */
    readonly modelMaxLength: number | null,
    private readonly prefixLength: number,
    private readonly suffixLength: number,
  ) {}

  /** The tokenizer of checkpoint `dir`, or null when it ships no tokenizer.json. */
  static async load(dir: string): Promise<TextTokenizer | null> {
    const tokenizerPath = join(dir, TOKENIZER_FILE);
    if (!(await pathExists(tokenizerPath))) return null;
    const configPath = join(dir, TOKENIZER_CONFIG_FILE);
    const tokenizerJson = await readJson(tokenizerPath);
    const configJson = (await pathExists(configPath)) ? await readJson(configPath) : {};
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, configJson);
    } catch (err) {
      throw new CheckpointError(`${tokenizerPath}: cannot build a tokenizer from it (${(err as Error).message})`, { cause: err });
    }
    const maxLength = (configJson as Record<string, unknown>)['model_max_length'];
    // transformers writes a huge sentinel (1e30) when the length is unknown.
    const modelMaxLength = typeof maxLength === 'number' && Number.isSafeInteger(maxLength) && maxLength > 0 ? maxLength : null;
    const { prefixLength, suffixLength } = specialTemplate(tokenizer, tokenizerPath);
    return new TextTokenizer(tokenizer, modelMaxLength, prefixLength, suffixLength);
  }

  /**
   * Encode one text with the model's special tokens. With `maxLength`, a longer
   * encoding is truncated to exactly `maxLength` tokens, special tokens kept.
   */
  encode(text: string, opts: { maxLength?: number } = {}): EncodedText {
    const full = this.tokenizer.encode(text, { return_token_type_ids: true });
    const ids = full.ids;
    const types = full.token_type_ids ?? ids.map(() => 0);
    const max = opts.maxLength;
    if (max === undefined || ids.length <= max) return { inputIds: ids, tokenTypeIds: types, truncated: false };
    const specials = this.prefixLength + this.suffixLength;
    if (max <= specials) return { inputIds: ids.slice(0, max), tokenTypeIds: types.slice(0, max), truncated: true };
    const keep = max - specials;
    const cut = <T>(a: T[]): T[] => [...a.slice(0, this.prefixLength + keep), ...a.slice(a.length - this.suffixLength)];
    return { inputIds: cut(ids), tokenTypeIds: cut(types), truncated: true };
  }

  /** Token ids → text, as the tokenizer's decoder says (byte-level BPE, SentencePiece, ...). */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? true });
  }

  /** The text's ids with the post-processor's special tokens (addSpecialTokens true) or without. */
  encodeIds(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }
}

async function readJson(path: string): Promise<object> {
  const value = await readCheckpointJson(path);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CheckpointError(`${path} is not a valid JSON object: expected a JSON object`);
  }
  return value;
}

/**
 * How many special tokens the post-processor puts before and after a single
 * sequence: encode a probe with and without them and find the probe's tokens
 * inside the full encoding.
 */
function specialTemplate(tokenizer: Tokenizer, source: string): { prefixLength: number; suffixLength: number } {
  const probe = 'a';
  const full: number[] = tokenizer.encode(probe).ids;
  const bare: number[] = tokenizer.encode(probe, { add_special_tokens: false }).ids;
  for (let start = 0; start + bare.length <= full.length; start++) {
    if (bare.every((id: number, i: number) => full[start + i] === id)) {
      return { prefixLength: start, suffixLength: full.length - start - bare.length };
    }
  }
  throw new CheckpointError(`${source}: the post-processor does not keep the text's tokens contiguous; cannot truncate safely`);
}
