// Reader and writer for Hugging Face's safetensors format:
//   [u64 little-endian header length N][N bytes of JSON header][data region]
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end]},
// offsets relative to the start of the data region, plus an optional
// "__metadata__" map of strings. Tensors are row-major, little-endian.
//
// The reader validates the header as strictly as the reference Rust
// implementation (huggingface/safetensors): every byte of the data region
// must belong to exactly one tensor. Tensor data is read lazily, one tensor
// per call, so a 500 MB checkpoint never sits in memory twice.

import { closeSync, openSync, readSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

import { PetServeError } from '../util/errors.js';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from '../util/f16.js';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
}

export interface TensorToWrite {
  dtype: 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8';
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

const BYTES_PER_ELEMENT: Readonly<Record<SafetensorsDtype, number>> = {
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

const HEADER_LENGTH_PREFIX_BYTES = 8;
// Same cap as the reference implementation: a larger header is a corrupt
// length field, not a real checkpoint, and must not trigger a huge read.
const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';
// readSync rejects lengths above 2 GiB - 1; large tensors are read in chunks.
const MAX_READ_CHUNK_BYTES = 1 << 30;
const WRITE_CHUNK_BYTES = 64 << 20;

/** The file is not a valid safetensors file (header, offsets, or sizes). */
export class SafetensorsFormatError extends PetServeError {
  readonly filePath: string;
  readonly tensorName: string | undefined;

  constructor(filePath: string, detail: string, tensorName?: string) {
    const where = tensorName === undefined ? filePath : `${filePath}, tensor "${tensorName}"`;
    super('SAFETENSORS_FORMAT', `invalid safetensors file (${where}): ${detail}`);
    this.filePath = filePath;
    this.tensorName = tensorName;
  }
}

/** A tensor name that the file does not contain. */
export class TensorNotFoundError extends PetServeError {
  constructor(filePath: string, tensorName: string) {
    super('TENSOR_NOT_FOUND', `tensor "${tensorName}" not found in ${filePath}`);
  }
}

/** A tensor that cannot be read as the requested type (wrong dtype, or I64 values beyond int32). */
export class TensorConversionError extends PetServeError {
  constructor(filePath: string, tensorName: string, detail: string) {
    super('TENSOR_CONVERSION', `cannot convert tensor "${tensorName}" in ${filePath}: ${detail}`);
  }
}

/** The tensors handed to writeSafetensors are inconsistent (shape vs data, dtype vs array type). */
export class SafetensorsWriteError extends PetServeError {
  constructor(filePath: string, detail: string, tensorName?: string) {
    const where = tensorName === undefined ? filePath : `${filePath}, tensor "${tensorName}"`;
    super('SAFETENSORS_WRITE', `cannot write safetensors file (${where}): ${detail}`);
  }
}

interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  // Offsets relative to the start of the data region.
  begin: number;
  end: number;
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  private readonly entries: ReadonlyMap<string, TensorEntry>;
  // Absolute file offset of the data region.
  private readonly dataStart: number;

  private constructor(
    path: string,
    metadata: Record<string, string>,
    entries: ReadonlyMap<string, TensorEntry>,
    dataStart: number,
  ) {
    this.path = path;
    this.metadata = metadata;
    this.entries = entries;
    this.dataStart = dataStart;
  }

  static async open(path: string): Promise<SafetensorsFile> {
    assertLittleEndianHost();
    const fileBytes = (await stat(path)).size;
    if (fileBytes < HEADER_LENGTH_PREFIX_BYTES) {
      throw new SafetensorsFormatError(path, `file is ${fileBytes} bytes, shorter than the 8-byte header length`);
    }
    const handle = await open(path, 'r');
    let headerBytes: Uint8Array;
    try {
      const prefix = Buffer.alloc(HEADER_LENGTH_PREFIX_BYTES);
      await readExactly(handle, prefix, 0, path);
      const headerLength = prefix.readBigUInt64LE(0);
      if (headerLength > BigInt(fileBytes - HEADER_LENGTH_PREFIX_BYTES)) {
        throw new SafetensorsFormatError(
          path,
          `header length ${headerLength} exceeds the ${fileBytes - HEADER_LENGTH_PREFIX_BYTES} bytes after the length field`,
        );
      }
      if (headerLength > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsFormatError(path, `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      }
      headerBytes = Buffer.alloc(Number(headerLength));
      await readExactly(handle, headerBytes, HEADER_LENGTH_PREFIX_BYTES, path);
    } finally {
      await handle.close();
    }
    const dataStart = HEADER_LENGTH_PREFIX_BYTES + headerBytes.length;
    const { entries, metadata } = parseHeader(path, headerBytes, fileBytes - dataStart);
    return new SafetensorsFile(path, metadata, entries, dataStart);
  }

  /** Tensor names in the order their data appears in the file. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo | undefined {
    const entry = this.entries.get(name);
    if (entry === undefined) {
      return undefined;
    }
    return { name, dtype: entry.dtype, shape: [...entry.shape], byteLength: entry.end - entry.begin };
  }

  /** A fresh copy of the tensor's bytes, exactly as stored. */
  readRaw(name: string): Uint8Array {
    return this.readEntryBytes(this.entry(name));
  }

  /** The tensor widened or narrowed to float32; only float dtypes are accepted. */
  readFloat32(name: string): Float32Array {
    const entry = this.entry(name);
    // readEntryBytes returns a fresh buffer at offset 0, so these views are
    // aligned even when the tensor's offset in the file is not.
    const raw = this.readEntryBytes(entry);
    const count = raw.byteLength / BYTES_PER_ELEMENT[entry.dtype];
    switch (entry.dtype) {
      case 'F32':
        return new Float32Array(raw.buffer, 0, count);
      case 'F16':
        return f16ArrayToF32(new Uint16Array(raw.buffer, 0, count));
      case 'BF16':
        return bf16ArrayToF32(new Uint16Array(raw.buffer, 0, count));
      case 'F64':
        return Float32Array.from(new Float64Array(raw.buffer, 0, count));
      default:
        throw new TensorConversionError(this.path, name, `dtype ${entry.dtype} is not a float type`);
    }
  }

  /** The tensor as int32; only integer and BOOL dtypes are accepted. */
  readInt(name: string): Int32Array {
    const entry = this.entry(name);
    const raw = this.readEntryBytes(entry);
    const count = raw.byteLength / BYTES_PER_ELEMENT[entry.dtype];
    switch (entry.dtype) {
      case 'I64':
        return this.narrowI64(name, new Int32Array(raw.buffer, 0, count * 2));
      case 'I32':
        return new Int32Array(raw.buffer, 0, count);
      case 'I16':
        return Int32Array.from(new Int16Array(raw.buffer, 0, count));
      case 'I8':
        return Int32Array.from(new Int8Array(raw.buffer, 0, count));
      case 'U8':
        return Int32Array.from(raw);
      case 'BOOL':
        // Any non-zero byte is true, as in PyTorch.
        return Int32Array.from(raw, (byte) => (byte === 0 ? 0 : 1));
      default:
        throw new TensorConversionError(this.path, name, `dtype ${entry.dtype} is not an integer type`);
    }
  }

  private entry(name: string): TensorEntry {
    const entry = this.entries.get(name);
    if (entry === undefined) {
      throw new TensorNotFoundError(this.path, name);
    }
    return entry;
  }

  // I64 read as (low, high) int32 word pairs: a value fits in int32 exactly
  // when the high word is the sign extension of the low word. Avoids BigInt.
  private narrowI64(name: string, words: Int32Array): Int32Array {
    const out = new Int32Array(words.length / 2);
    for (let i = 0; i < out.length; i++) {
      const low = words[2 * i]!;
      const high = words[2 * i + 1]!;
      if (high !== low >> 31) {
        const value = (BigInt(high) << 32n) | BigInt(low >>> 0);
        throw new TensorConversionError(this.path, name, `I64 value ${value} at index ${i} does not fit in int32`);
      }
      out[i] = low;
    }
    return out;
  }

  private readEntryBytes(entry: TensorEntry): Uint8Array {
    const out = new Uint8Array(entry.end - entry.begin);
    const fd = openSync(this.path, 'r');
    try {
      let done = 0;
      while (done < out.length) {
        const chunk = Math.min(out.length - done, MAX_READ_CHUNK_BYTES);
        const bytesRead = readSync(fd, out, done, chunk, this.dataStart + entry.begin + done);
        if (bytesRead === 0) {
          throw new SafetensorsFormatError(this.path, 'file ended inside the tensor data (truncated after open?)', entry.name);
        }
        done += bytesRead;
      }
    } finally {
      closeSync(fd);
    }
    return out;
  }
}

async function readExactly(
  handle: FileHandle,
  into: Uint8Array,
  position: number,
  path: string,
): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) {
      throw new SafetensorsFormatError(path, 'file ended inside the header');
    }
    done += bytesRead;
  }
}

function parseHeader(
  path: string,
  headerBytes: Uint8Array,
  dataRegionBytes: number,
): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsFormatError(path, 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (error) {
    throw new SafetensorsFormatError(path, `header is not valid JSON: ${(error as Error).message}`);
  }
  if (!isPlainObject(header)) {
    throw new SafetensorsFormatError(path, 'header JSON is not an object');
  }

  let metadata: Record<string, string> = {};
  const unordered: TensorEntry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(path, value);
    } else {
      unordered.push(parseTensorEntry(path, name, value, dataRegionBytes));
    }
  }

  // Sorted by position, each tensor must start where the previous one ended:
  // this rejects overlaps (two names aliasing the same bytes) and holes
  // (bytes no tensor owns, which the format forbids to prevent polyglot files).
  const ordered = [...unordered].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expectedBegin = 0;
  let previousName: string | undefined;
  for (const entry of ordered) {
    if (entry.begin < expectedBegin) {
      throw new SafetensorsFormatError(
        path,
        `data_offsets [${entry.begin}, ${entry.end}] overlap tensor "${previousName}" which ends at ${expectedBegin}`,
        entry.name,
      );
    }
    if (entry.begin > expectedBegin) {
      throw new SafetensorsFormatError(
        path,
        `data_offsets begin at ${entry.begin} but the previous tensor ends at ${expectedBegin}: unowned bytes in the data region`,
        entry.name,
      );
    }
    expectedBegin = entry.end;
    previousName = entry.name;
  }
  if (expectedBegin !== dataRegionBytes) {
    throw new SafetensorsFormatError(
      path,
      `tensors cover ${expectedBegin} bytes but the data region holds ${dataRegionBytes} bytes`,
    );
  }
  return { entries: new Map(ordered.map((entry) => [entry.name, entry])), metadata };
}

function parseMetadata(path: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value)) {
    throw new SafetensorsFormatError(path, `"${METADATA_KEY}" is not an object`);
  }
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== 'string') {
      throw new SafetensorsFormatError(path, `"${METADATA_KEY}" value for key "${key}" is not a string`);
    }
  }
  // fromEntries defines own properties, so a "__proto__" key stays data.
  return Object.fromEntries(Object.entries(value as Record<string, string>));
}

function parseTensorEntry(path: string, name: string, value: unknown, dataRegionBytes: number): TensorEntry {
  if (!isPlainObject(value)) {
    throw new SafetensorsFormatError(path, 'header entry is not an object', name);
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string' || !Object.hasOwn(BYTES_PER_ELEMENT, dtype)) {
    throw new SafetensorsFormatError(path, `unknown or unsupported dtype ${JSON.stringify(dtype)}`, name);
  }
  const knownDtype = dtype as SafetensorsDtype;
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
    throw new SafetensorsFormatError(path, `shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInteger)) {
    throw new SafetensorsFormatError(path, `data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`, name);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) {
    throw new SafetensorsFormatError(path, `data_offsets [${begin}, ${end}] end before they begin`, name);
  }
  if (end > dataRegionBytes) {
    throw new SafetensorsFormatError(
      path,
      `data_offsets [${begin}, ${end}] run past the ${dataRegionBytes}-byte data region`,
      name,
    );
  }
  const elementCount = (shape as number[]).reduce((product, dim) => product * dim, 1);
  const expectedBytes = elementCount * BYTES_PER_ELEMENT[knownDtype];
  if (!Number.isSafeInteger(expectedBytes) || expectedBytes !== end - begin) {
    throw new SafetensorsFormatError(
      path,
      `data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${JSON.stringify(shape)} of ${knownDtype} needs ${expectedBytes}`,
      name,
    );
  }
  return { name, dtype: knownDtype, shape: [...(shape as number[])], begin, end };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function assertLittleEndianHost(): void {
  // Typed-array views read and write in host byte order; safetensors is
  // little-endian, and every platform Node ships WebGPU for is too.
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new Error('safetensors I/O requires a little-endian host');
  }
}

// ------------------------------------------------------------------ writer

export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
  /** Called after each tensor is on disk (progress of large checkpoints). */
  onTensorWritten?: (name: string) => void,
): Promise<void> {
  assertLittleEndianHost();
  // Larger elements first, then by name (the reference writer's order): with
  // the header padded to 8 bytes, every tensor then starts naturally aligned,
  // so readers that map the file can view tensors without copying.
  const names = Object.keys(tensors).sort((a, b) => {
    const sizeOrder = BYTES_PER_ELEMENT[tensors[b]!.dtype] - BYTES_PER_ELEMENT[tensors[a]!.dtype];
    return sizeOrder !== 0 ? sizeOrder : a < b ? -1 : a > b ? 1 : 0;
  });

  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    header[METADATA_KEY] = { ...metadata };
  }
  let offset = 0;
  for (const name of names) {
    const tensor = tensors[name]!;
    validateTensorToWrite(path, name, tensor);
    const byteLength = tensor.data.length * BYTES_PER_ELEMENT[tensor.dtype];
    header[name] = { dtype: tensor.dtype, shape: [...tensor.shape], data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }

  const headerJson = new TextEncoder().encode(JSON.stringify(header));
  const paddedLength = Math.ceil(headerJson.length / 8) * 8;
  const headerBlock = Buffer.alloc(HEADER_LENGTH_PREFIX_BYTES + paddedLength, 0x20);
  headerBlock.writeBigUInt64LE(BigInt(paddedLength), 0);
  headerBlock.set(headerJson, HEADER_LENGTH_PREFIX_BYTES);

  const handle = await open(path, 'w');
  try {
    await writeFully(handle, headerBlock);
    // One tensor encoded at a time keeps peak memory at one converted copy.
    for (const name of names) {
      await writeFully(handle, encodeTensor(tensors[name]!));
      onTensorWritten?.(name);
    }
  } finally {
    await handle.close();
  }
}

function validateTensorToWrite(path: string, name: string, tensor: TensorToWrite): void {
  if (name === METADATA_KEY) {
    throw new SafetensorsWriteError(path, `"${METADATA_KEY}" is reserved and cannot name a tensor`);
  }
  if (!Object.hasOwn(BYTES_PER_ELEMENT, tensor.dtype)) {
    throw new SafetensorsWriteError(path, `unsupported dtype ${JSON.stringify(tensor.dtype)}`, name);
  }
  if (!tensor.shape.every(isNonNegativeSafeInteger)) {
    throw new SafetensorsWriteError(path, `shape ${JSON.stringify(tensor.shape)} is not a list of non-negative integers`, name);
  }
  const elementCount = tensor.shape.reduce((product, dim) => product * dim, 1);
  if (elementCount !== tensor.data.length) {
    throw new SafetensorsWriteError(
      path,
      `shape ${JSON.stringify(tensor.shape)} holds ${elementCount} elements but data has ${tensor.data.length}`,
      name,
    );
  }
  const expectedArray = expectedArrayFor(tensor.dtype);
  if (!(tensor.data instanceof expectedArray)) {
    throw new SafetensorsWriteError(
      path,
      `dtype ${tensor.dtype} needs its data as a ${expectedArray.name}, got ${tensor.data.constructor.name}`,
      name,
    );
  }
}

function expectedArrayFor(
  dtype: TensorToWrite['dtype'],
): typeof Float32Array | typeof Int32Array | typeof Uint8Array {
  switch (dtype) {
    case 'F32':
    case 'F16':
    case 'BF16':
      return Float32Array;
    case 'I32':
    case 'I64':
      return Int32Array;
    case 'U8':
      return Uint8Array;
  }
}

function encodeTensor(tensor: TensorToWrite): Uint8Array {
  const { data } = tensor;
  switch (tensor.dtype) {
    case 'F32':
    case 'I32':
    case 'U8':
      return bytesOf(data);
    case 'F16':
      return bytesOf(f32ArrayToF16(data as Float32Array));
    case 'BF16':
      return bytesOf(f32ArrayToBf16(data as Float32Array));
    case 'I64': {
      const words = new Int32Array(data.length * 2);
      for (let i = 0; i < data.length; i++) {
        const value = data[i]!;
        words[2 * i] = value;
        words[2 * i + 1] = value >> 31; // sign extension
      }
      return bytesOf(words);
    }
  }
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

async function writeFully(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const chunk = Math.min(bytes.length - done, WRITE_CHUNK_BYTES);
    const { bytesWritten } = await handle.write(bytes, done, chunk);
    done += bytesWritten;
  }
}
