// Decoding of Open Inference Protocol tensors: data may be flat or nested
// (row-major either way) and must hold exactly prod(shape) elements.

import { RequestValidationError } from './errors.js';
import type { V2RequestInput } from './protocol/v2.js';

const INTEGER_TYPES = new Set(['INT8', 'INT16', 'INT32', 'INT64', 'UINT8', 'UINT16', 'UINT32', 'UINT64']);

function flatten(data: unknown[], out: unknown[] = []): unknown[] {
  for (const v of data) {
    if (Array.isArray(v)) flatten(v, out);
    else out.push(v);
  }
  return out;
}

function elements(input: V2RequestInput): unknown[] {
  const flat = flatten(input.data);
  const expected = input.shape.reduce((p, d) => p * d, 1);
  if (flat.length !== expected) {
    throw new RequestValidationError(`input '${input.name}': shape [${input.shape.join(', ')}] needs ${expected} elements, data holds ${flat.length}`);
  }
  return flat;
}

/** An integer matrix [B, L] as B rows of L values. */
export function integerMatrix(input: V2RequestInput): number[][] {
  if (!INTEGER_TYPES.has(input.datatype)) {
    throw new RequestValidationError(`input '${input.name}': datatype must be an integer type (INT64), got ${input.datatype}`);
  }
  if (input.shape.length !== 2) throw new RequestValidationError(`input '${input.name}': shape must be [batch, length], got [${input.shape.join(', ')}]`);
  const [rows, cols] = input.shape as [number, number];
  if (rows === 0 || cols === 0) throw new RequestValidationError(`input '${input.name}': empty tensor [${rows}, ${cols}]`);
  const flat = elements(input);
  const out: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const row = flat.slice(r * cols, (r + 1) * cols);
    row.forEach((v, c) => {
      if (typeof v !== 'number' || !Number.isInteger(v)) {
        throw new RequestValidationError(`input '${input.name}'[${r}][${c}]: ${typeof v === 'number' ? v : `a ${v === null ? 'null' : typeof v}`} is not an integer`);
      }
      if (v < 0) throw new RequestValidationError(`input '${input.name}'[${r}][${c}]: ${v} is negative`);
    });
    out.push(row as number[]);
  }
  return out;
}

/** A BYTES tensor of shape [B] or [B, 1] as B strings. */
export function stringVector(input: V2RequestInput): string[] {
  if (input.datatype !== 'BYTES') throw new RequestValidationError(`input '${input.name}': datatype must be BYTES, got ${input.datatype}`);
  const okShape = input.shape.length === 1 || (input.shape.length === 2 && input.shape[1] === 1);
  if (!okShape) throw new RequestValidationError(`input '${input.name}': shape must be [batch] or [batch, 1], got [${input.shape.join(', ')}]`);
  if (input.shape[0] === 0) throw new RequestValidationError(`input '${input.name}': empty tensor`);
  const flat = elements(input);
  return flat.map((v, i) => {
    if (typeof v !== 'string' || v.length === 0) throw new RequestValidationError(`input '${input.name}'[${i}]: must be a non-empty string`);
    return v;
  });
}

/**
 * Lengths of right-padded rows from an attention mask (1s then 0s). A mask with
 * a 0 before a 1 is refused: the engine packs sequences and has no padding
 * inside a sequence, so such a row has no faithful meaning.
 */
export function maskedLengths(mask: number[][], name: string): number[] {
  return mask.map((row, r) => {
    let len = 0;
    while (len < row.length && row[len] === 1) len++;
    for (let c = len; c < row.length; c++) {
      if (row[c] !== 0) throw new RequestValidationError(`input '${name}'[${r}]: must be 1s followed by 0s (right padding), got ${row[c]} at ${c}`);
    }
    if (len === 0) throw new RequestValidationError(`input '${name}'[${r}]: masks every token`);
    return len;
  });
}
