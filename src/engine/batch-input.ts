import { packedKeyRanges } from '../kernels/attention.js';
import type { BertConfig } from '../model/families/bert.js';
import type { PackedShape } from '../model/families/types.js';
import { InvalidInputError } from '../util/errors.js';

/** Sequences of one batch as the caller gives them (ragged). */
export interface SequenceBatch {
  inputIds: readonly (readonly number[])[];
  /** Segment ids per token; all 0 when omitted. */
  tokenTypeIds?: readonly (readonly number[])[] | undefined;
}

/** Host-side tables that describe a packed batch to the kernels. */
export interface PackedBatch {
  shape: PackedShape;
  lengths: number[];
  /** u32 [tokens, 3] (id, position, type). */
  tokenTable: Uint32Array;
  /** u32 [tokens, 2] (first key row, key count). */
  keyRange: Uint32Array;
  /** u32 [sequences]: row of each sequence's first token. */
  clsRows: Uint32Array;
}

/**
 * Check one sequence against the model: non-empty, within max positions, ids in
 * the vocabulary, token types (if given) of the same length and in range.
 * `index` names the row in messages (`input_ids[3][7]`); without it a lone
 * sequence is named `input_ids[7]` (the scheduler validates one request at a time).
 */
export function validateSequence(ids: readonly number[], types: readonly number[] | undefined, cfg: BertConfig, index?: number): void {
  const row = index === undefined ? '' : `[${index}]`;
  if (!Array.isArray(ids) || ids.length === 0) throw new InvalidInputError(`input_ids${row}: must be a non-empty array`);
  if (ids.length > cfg.maxPositionEmbeddings) {
    throw new InvalidInputError(`input_ids${row}: ${ids.length} tokens exceed the model's max_position_embeddings ${cfg.maxPositionEmbeddings}`);
  }
  if (types !== undefined && (!Array.isArray(types) || types.length !== ids.length)) {
    throw new InvalidInputError(`token_type_ids${row}: length differs from input_ids${row}`);
  }
  for (let p = 0; p < ids.length; p++) {
    const id = ids[p]!;
    if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) {
      throw new InvalidInputError(`input_ids${row}[${p}]: ${String(id)} is not a token id in 0..${cfg.vocabSize - 1}`);
    }
    const typ = types?.[p] ?? 0;
    if (!Number.isInteger(typ) || typ < 0 || typ >= cfg.typeVocabSize) {
      throw new InvalidInputError(`token_type_ids${row}[${p}]: ${String(typ)} is not in 0..${cfg.typeVocabSize - 1}`);
    }
  }
}

/**
 * Validate ids against the model and lay the sequences end to end (no padding).
 * `alreadyValidated`: the rows were checked by validateSequence already (the
 * runner checks in the caller's order, then packs the plan's reordering once).
 */
export function packBatch(batch: SequenceBatch, cfg: BertConfig, opts: { alreadyValidated?: boolean } = {}): PackedBatch {
  const seqs = batch.inputIds;
  if (!Array.isArray(seqs) || seqs.length === 0) throw new InvalidInputError('input_ids: at least one sequence is required');
  const types = batch.tokenTypeIds;
  if (types !== undefined && types.length !== seqs.length) {
    throw new InvalidInputError(`token_type_ids: ${types.length} rows for ${seqs.length} input_ids rows`);
  }
  const lengths = seqs.map((s, i) => {
    if (types !== undefined && !Array.isArray(types[i])) throw new InvalidInputError(`token_type_ids[${i}]: length differs from input_ids[${i}]`);
    if (opts.alreadyValidated !== true) validateSequence(s, types?.[i], cfg, i);
    return s.length;
  });
  const tokens = lengths.reduce((a, b) => a + b, 0);
  const tokenTable = new Uint32Array(tokens * 3);
  const clsRows = new Uint32Array(seqs.length);
  let t = 0;
  seqs.forEach((s, i) => {
    clsRows[i] = t;
    s.forEach((id: number, p: number) => {
      tokenTable[t * 3] = id;
      tokenTable[t * 3 + 1] = p;
      tokenTable[t * 3 + 2] = types?.[i]?.[p] ?? 0;
      t++;
    });
  });
  return {
    shape: { tokens, sequences: seqs.length, maxLength: Math.max(...lengths) },
    lengths,
    tokenTable,
    keyRange: packedKeyRanges(lengths),
    clsRows,
  };
}
