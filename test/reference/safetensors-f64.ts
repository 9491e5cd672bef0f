// A deliberately separate safetensors reader for the float64 reference. It shares
// no code with src/model so that a bug in the product's loader cannot hide in
// both the thing under test and the thing it is checked against.
//
// Format: 8-byte little-endian u64 header length N, then N bytes of JSON
// `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": {...} }`,
// then the data region. Offsets are relative to the start of the data region and
// need not be aligned, so every element is read through a DataView.
import { readFileSync } from 'node:fs';

export interface RefTensor {
  shape: number[];
  data: Float64Array;
}

/** A tensor together with the dtype it was stored as (for loaders that must check it). */
export interface RefTypedTensor extends RefTensor {
  dtype: string;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const BYTES_PER_ELEMENT: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** IEEE 754 binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits. */
export function decodeF16Bits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** bfloat16: 1 sign bit, 8 exponent bits (bias 127), 7 mantissa bits (the top half of an f32). */
export function decodeBf16Bits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 7) & 0xff;
  const mantissa = bits & 0x7f;
  if (exponent === 0) return sign * mantissa * 2 ** -133; // zero and subnormals: m/128 * 2^-126
  if (exponent === 0xff) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 128) * 2 ** (exponent - 127);
}

function readElement(view: DataView, byteOffset: number, dtype: string): number {
  switch (dtype) {
    case 'F64':
      return view.getFloat64(byteOffset, true);
    case 'F32':
      return view.getFloat32(byteOffset, true);
    case 'F16':
      return decodeF16Bits(view.getUint16(byteOffset, true));
    case 'BF16':
      return decodeBf16Bits(view.getUint16(byteOffset, true));
    case 'I64':
      return Number(view.getBigInt64(byteOffset, true));
    case 'I32':
      return view.getInt32(byteOffset, true);
    case 'I16':
      return view.getInt16(byteOffset, true);
    case 'I8':
      return view.getInt8(byteOffset);
    case 'U8':
    case 'BOOL':
      return view.getUint8(byteOffset);
    default:
      throw new Error(`safetensors-f64: unsupported dtype ${dtype}`);
  }
}

function parseHeaderEntry(name: string, raw: unknown): HeaderEntry {
  if (typeof raw !== 'object' || raw === null) throw new Error(`safetensors-f64: entry ${name} is not an object`);
  const entry = raw as Record<string, unknown>;
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== 'string') throw new Error(`safetensors-f64: entry ${name} has no dtype`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && (d as number) >= 0)) {
    throw new Error(`safetensors-f64: entry ${name} has a bad shape`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isInteger(o) && (o as number) >= 0)
  ) {
    throw new Error(`safetensors-f64: entry ${name} has bad data_offsets`);
  }
  return { dtype, shape: shape as number[], data_offsets: [offsets[0] as number, offsets[1] as number] };
}

/** Parses a whole safetensors file held in memory; every tensor is widened to float64. */
export function parseSafetensorsF64(bytes: Uint8Array): Map<string, RefTensor> {
  const tensors = new Map<string, RefTensor>();
  for (const [name, { shape, data }] of parseSafetensorsF64Typed(bytes)) tensors.set(name, { shape, data });
  return tensors;
}

/** As parseSafetensorsF64, also keeping each tensor's stored dtype. */
export function parseSafetensorsF64Typed(bytes: Uint8Array): Map<string, RefTypedTensor> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 8) throw new Error('safetensors-f64: file shorter than its 8-byte header length');
  const headerLength = Number(view.getBigUint64(0, true));
  const dataStart = 8 + headerLength;
  if (dataStart > bytes.byteLength) throw new Error('safetensors-f64: header length runs past the end of the file');
  const headerJson = new TextDecoder('utf-8').decode(bytes.subarray(8, dataStart));
  const header = JSON.parse(headerJson) as Record<string, unknown>;
  const dataLength = bytes.byteLength - dataStart;

  const tensors = new Map<string, RefTypedTensor>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const entry = parseHeaderEntry(name, raw);
    const elementBytes = BYTES_PER_ELEMENT[entry.dtype];
    if (elementBytes === undefined) throw new Error(`safetensors-f64: tensor ${name} has unsupported dtype ${entry.dtype}`);
    const count = entry.shape.reduce((a, b) => a * b, 1);
    const [begin, end] = entry.data_offsets;
    if (end - begin !== count * elementBytes) {
      throw new Error(
        `safetensors-f64: tensor ${name} spans ${end - begin} bytes but ${entry.dtype}${JSON.stringify(entry.shape)} needs ${count * elementBytes}`,
      );
    }
    if (end > dataLength) throw new Error(`safetensors-f64: tensor ${name} runs past the end of the data region`);
    const data = new Float64Array(count);
    for (let i = 0; i < count; i++) {
      data[i] = readElement(view, dataStart + begin + i * elementBytes, entry.dtype);
    }
    tensors.set(name, { dtype: entry.dtype, shape: [...entry.shape], data });
  }
  return tensors;
}

export function readSafetensorsF64(path: string): Map<string, RefTensor> {
  return parseSafetensorsF64(readFileSync(path));
}

export function readSafetensorsF64Typed(path: string): Map<string, RefTypedTensor> {
  return parseSafetensorsF64Typed(readFileSync(path));
}
