import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  SafetensorsFile,
  SafetensorsFormatError,
  SafetensorsWriteError,
  TensorConversionError,
  TensorNotFoundError,
  writeSafetensors,
} from '../../src/model/safetensors.js';
import type { TensorToWrite } from '../../src/model/safetensors.js';
import { PetServeError } from '../../src/util/errors.js';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from '../../src/util/f16.js';
import { Rng } from '../../src/util/random.js';

let dir: string;
let fileCounter = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'petserve-safetensors-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function nextPath(): string {
  fileCounter += 1;
  return join(dir, `file-${fileCounter}.safetensors`);
}

/** Writes a file by hand: length prefix, header text, data bytes. */
async function writeRawFile(
  header: unknown,
  data: Uint8Array,
  options: { headerLength?: bigint; headerText?: string } = {},
): Promise<string> {
  const headerBytes = new TextEncoder().encode(options.headerText ?? JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(options.headerLength ?? BigInt(headerBytes.length));
  const path = nextPath();
  await writeFile(path, Buffer.concat([prefix, headerBytes, data]));
  return path;
}

function randomFloats(count: number, seed: number, std = 1): Float32Array {
  return new Rng(seed).fillNormal(new Float32Array(count), 0, std);
}

describe('writeSafetensors then SafetensorsFile', () => {
  it('round-trips float, integer, scalar and empty tensors with odd shapes', async () => {
    const f32 = randomFloats(3 * 5 * 7, 1);
    const f16Source = randomFloats(7 * 3, 2, 10);
    const bf16Source = randomFloats(2 * 3 * 1, 3, 1000);
    const i64 = new Int32Array([-2147483648, -1, 0, 1, 2147483647]);
    const i32 = new Int32Array([5, -7, 11]);
    const u8 = new Uint8Array([0, 1, 255]);
    const tensors: Record<string, TensorToWrite> = {
      'encoder.weight': { dtype: 'F32', shape: [3, 5, 7], data: f32 },
      half: { dtype: 'F16', shape: [7, 3], data: f16Source },
      brain: { dtype: 'BF16', shape: [2, 3, 1], data: bf16Source },
      ids: { dtype: 'I64', shape: [5], data: i64 },
      counts: { dtype: 'I32', shape: [1, 3], data: i32 },
      mask: { dtype: 'U8', shape: [3], data: u8 },
      scalar: { dtype: 'F32', shape: [], data: new Float32Array([42.5]) },
      empty: { dtype: 'F16', shape: [0, 4], data: new Float32Array(0) },
    };
    const path = nextPath();
    await writeSafetensors(path, tensors, { format: 'pt', note: 'round trip' });

    const file = await SafetensorsFile.open(path);
    expect(file.path).toBe(path);
    expect(file.metadata).toEqual({ format: 'pt', note: 'round trip' });
    expect(new Set(file.names())).toEqual(new Set(Object.keys(tensors)));
    expect(file.has('half')).toBe(true);
    expect(file.has('missing')).toBe(false);
    expect(file.info('missing')).toBeUndefined();
    expect(file.info('encoder.weight')).toEqual({ name: 'encoder.weight', dtype: 'F32', shape: [3, 5, 7], byteLength: 420 });
    expect(file.info('ids')).toEqual({ name: 'ids', dtype: 'I64', shape: [5], byteLength: 40 });
    expect(file.info('scalar')?.shape).toEqual([]);
    expect(file.info('empty')).toEqual({ name: 'empty', dtype: 'F16', shape: [0, 4], byteLength: 0 });

    expect(file.readFloat32('encoder.weight')).toEqual(f32);
    expect(file.readFloat32('half')).toEqual(f16ArrayToF32(f32ArrayToF16(f16Source)));
    expect(new Uint16Array(file.readRaw('half').buffer)).toEqual(f32ArrayToF16(f16Source));
    expect(file.readFloat32('brain')).toEqual(bf16ArrayToF32(f32ArrayToBf16(bf16Source)));
    expect(file.readInt('ids')).toEqual(i64);
    expect(file.readInt('counts')).toEqual(i32);
    expect(file.readInt('mask')).toEqual(new Int32Array([0, 1, 255]));
    expect(file.readFloat32('scalar')).toEqual(new Float32Array([42.5]));
    expect(file.readFloat32('empty')).toEqual(new Float32Array(0));
  });

  it('stores I64 as sign-extended little-endian 64-bit words', async () => {
    const path = nextPath();
    await writeSafetensors(path, { ids: { dtype: 'I64', shape: [2], data: new Int32Array([-2, 3]) } });
    const raw = (await SafetensorsFile.open(path)).readRaw('ids');
    const view = new DataView(raw.buffer);
    expect(view.getBigInt64(0, true)).toBe(-2n);
    expect(view.getBigInt64(8, true)).toBe(3n);
  });

  it('pads the header with spaces to a multiple of 8 and aligns every tensor to its element size', async () => {
    const path = nextPath();
    await writeSafetensors(path, {
      a: { dtype: 'U8', shape: [3], data: new Uint8Array(3) },
      b: { dtype: 'F16', shape: [1], data: new Float32Array(1) },
      c: { dtype: 'F32', shape: [5], data: new Float32Array(5) },
      d: { dtype: 'I64', shape: [1], data: new Int32Array(1) },
    });
    const bytes = await readFile(path);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const headerText = bytes.subarray(8, 8 + headerLength).toString('utf8');
    const trimmed = headerText.trimEnd();
    expect(headerText.slice(trimmed.length)).toMatch(/^ *$/);
    const header = JSON.parse(headerText) as Record<string, { dtype: string; data_offsets: [number, number] }>;
    const elementBytes: Record<string, number> = { U8: 1, F16: 2, F32: 4, I64: 8 };
    for (const entry of Object.values(header)) {
      expect(entry.data_offsets[0] % elementBytes[entry.dtype]!).toBe(0);
    }
    expect(header).not.toHaveProperty('__metadata__');
  });

  it('writes the same bytes as the reference Python writer for a small file', async () => {
    // safetensors.torch.save_file({"x": torch.tensor([1.0, 2.0])}, f, metadata={"format": "pt"})
    const path = nextPath();
    await writeSafetensors(path, { x: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } }, { format: 'pt' });
    const json = '{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    const padded = json.padEnd(Math.ceil(json.length / 8) * 8, ' ');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(padded.length));
    const expected = Buffer.concat([prefix, Buffer.from(padded), Buffer.from(new Float32Array([1, 2]).buffer)]);
    expect(await readFile(path)).toEqual(expected);
  });

  it('rejects tensors whose data does not match their shape or dtype', async () => {
    await expect(
      writeSafetensors(nextPath(), { t: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } }),
    ).rejects.toThrow(SafetensorsWriteError);
    await expect(
      writeSafetensors(nextPath(), { t: { dtype: 'F16', shape: [2], data: new Int32Array(2) } }),
    ).rejects.toThrow(SafetensorsWriteError);
    await expect(
      writeSafetensors(nextPath(), { __metadata__: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } }),
    ).rejects.toThrow(SafetensorsWriteError);
  });
});

describe('SafetensorsFile with hand-built files', () => {
  it('reads tensors stored at unaligned offsets', async () => {
    const data = new Uint8Array(49);
    const view = new DataView(data.buffer);
    data.set([7, 8, 9], 0); // U8 [3] at 0..3
    [1.5, -2.25, 3, 1e-3].forEach((v, i) => view.setFloat32(3 + 4 * i, v, true)); // F32 [2,2] at 3..19
    [0x3c00, 0xc000, 0x3555].forEach((h, i) => view.setUint16(19 + 2 * i, h, true)); // F16 [3] at 19..25
    view.setFloat64(25, Math.PI, true); // F64 [1] at 25..33
    view.setBigInt64(33, -5n, true); // I64 [2] at 33..49
    view.setBigInt64(41, 2147483647n, true);
    const path = await writeRawFile(
      {
        bytes: { dtype: 'U8', shape: [3], data_offsets: [0, 3] },
        weights: { dtype: 'F32', shape: [2, 2], data_offsets: [3, 19] },
        halves: { dtype: 'F16', shape: [3], data_offsets: [19, 25] },
        wide: { dtype: 'F64', shape: [1], data_offsets: [25, 33] },
        ids: { dtype: 'I64', shape: [2], data_offsets: [33, 49] },
      },
      data,
    );
    const file = await SafetensorsFile.open(path);
    expect(file.names()).toEqual(['bytes', 'weights', 'halves', 'wide', 'ids']);
    expect(file.metadata).toEqual({});
    expect(file.readInt('bytes')).toEqual(new Int32Array([7, 8, 9]));
    expect(file.readFloat32('weights')).toEqual(new Float32Array([1.5, -2.25, 3, 1e-3]));
    expect(file.readFloat32('halves')).toEqual(new Float32Array([1, -2, 0.333251953125]));
    expect(file.readFloat32('wide')).toEqual(new Float32Array([Math.PI]));
    expect(file.readInt('ids')).toEqual(new Int32Array([-5, 2147483647]));
    expect([...file.readRaw('weights')]).toEqual([...data.subarray(3, 19)]);
  });

  it('reads I16, I8 and BOOL tensors as int32', async () => {
    const data = new Uint8Array([0xff, 0xff, 0x00, 0x80, 0xfe, 3, 0, 1, 2]);
    const path = await writeRawFile(
      {
        shorts: { dtype: 'I16', shape: [2], data_offsets: [0, 4] },
        bytes: { dtype: 'I8', shape: [2], data_offsets: [4, 6] },
        flags: { dtype: 'BOOL', shape: [3], data_offsets: [6, 9] },
      },
      data,
    );
    const file = await SafetensorsFile.open(path);
    expect(file.readInt('shorts')).toEqual(new Int32Array([-1, -32768]));
    expect(file.readInt('bytes')).toEqual(new Int32Array([-2, 3]));
    expect(file.readInt('flags')).toEqual(new Int32Array([0, 1, 1]));
  });

  it('refuses conversions that would lose meaning, and unknown names', async () => {
    const data = new Uint8Array(24);
    const view = new DataView(data.buffer);
    view.setBigInt64(0, 2n ** 40n, true);
    view.setBigInt64(8, -(2n ** 31n) - 1n, true);
    view.setFloat32(16, 1, true);
    view.setInt32(20, 1, true);
    const path = await writeRawFile(
      {
        big: { dtype: 'I64', shape: [1], data_offsets: [0, 8] },
        small: { dtype: 'I64', shape: [1], data_offsets: [8, 16] },
        float: { dtype: 'F32', shape: [1], data_offsets: [16, 20] },
        int: { dtype: 'I32', shape: [1], data_offsets: [20, 24] },
      },
      data,
    );
    const file = await SafetensorsFile.open(path);
    expect(() => file.readInt('big')).toThrow(TensorConversionError);
    expect(() => file.readInt('big')).toThrow(/1099511627776/);
    expect(() => file.readInt('small')).toThrow(TensorConversionError);
    expect(() => file.readInt('float')).toThrow(TensorConversionError);
    expect(() => file.readFloat32('int')).toThrow(TensorConversionError);
    expect(() => file.readFloat32('nope')).toThrow(TensorNotFoundError);
    expect(() => file.readRaw('nope')).toThrow(TensorNotFoundError);
  });
});

describe('SafetensorsFile rejects malformed files', () => {
  const f32x2 = (begin: number): unknown => ({ dtype: 'F32', shape: [2], data_offsets: [begin, begin + 8] });

  async function expectFormatError(path: string, tensorName?: string): Promise<void> {
    const error: unknown = await SafetensorsFile.open(path).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect(error).toBeInstanceOf(SafetensorsFormatError);
    // One base class, so the CLI and HTTP layers map every failure by code.
    expect(error).toBeInstanceOf(PetServeError);
    const formatError = error as SafetensorsFormatError;
    expect(formatError.code).toBe('SAFETENSORS_FORMAT');
    expect(formatError.message).toContain(path);
    if (tensorName !== undefined) {
      expect(formatError.tensorName).toBe(tensorName);
      expect(formatError.message).toContain(`"${tensorName}"`);
    }
  }

  it('a file shorter than the length prefix', async () => {
    const path = nextPath();
    await writeFile(path, Buffer.from([1, 2, 3]));
    await expectFormatError(path);
  });

  it('a header length beyond the file size', async () => {
    await expectFormatError(await writeRawFile({}, new Uint8Array(0), { headerLength: 1000n }));
  });

  it('a header length beyond 2^53', async () => {
    await expectFormatError(await writeRawFile({}, new Uint8Array(0), { headerLength: 2n ** 63n }));
  });

  it('a header that is not JSON', async () => {
    await expectFormatError(await writeRawFile(undefined, new Uint8Array(0), { headerText: '{"a": ' }));
  });

  it('a header that is JSON but not an object', async () => {
    await expectFormatError(await writeRawFile([1, 2], new Uint8Array(0)));
  });

  it('a header that is not UTF-8', async () => {
    const path = nextPath();
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(2n);
    await writeFile(path, Buffer.concat([prefix, Buffer.from([0xff, 0xfe])]));
    await expectFormatError(path);
  });

  it('an unknown dtype', async () => {
    const path = await writeRawFile({ w: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2));
    await expectFormatError(path, 'w');
  });

  it('a malformed shape', async () => {
    const path = await writeRawFile({ w: { dtype: 'U8', shape: [-1], data_offsets: [0, 0] } }, new Uint8Array(0));
    await expectFormatError(path, 'w');
    const path2 = await writeRawFile({ w: { dtype: 'U8', shape: [1.5], data_offsets: [0, 1] } }, new Uint8Array(1));
    await expectFormatError(path2, 'w');
  });

  it('malformed data_offsets', async () => {
    const path = await writeRawFile({ w: { dtype: 'U8', shape: [1], data_offsets: [0] } }, new Uint8Array(1));
    await expectFormatError(path, 'w');
    const reversed = await writeRawFile({ w: { dtype: 'U8', shape: [0], data_offsets: [1, 0] } }, new Uint8Array(1));
    await expectFormatError(reversed, 'w');
  });

  it('data_offsets past the end of the data region', async () => {
    const path = await writeRawFile({ w: f32x2(0), v: f32x2(8) }, new Uint8Array(12));
    await expectFormatError(path, 'v');
  });

  it('data_offsets inconsistent with shape times dtype size', async () => {
    const path = await writeRawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8));
    await expectFormatError(path, 'w');
  });

  it('overlapping tensors', async () => {
    const path = await writeRawFile({ w: f32x2(0), v: f32x2(4) }, new Uint8Array(12));
    await expectFormatError(path, 'v');
  });

  it('two tensors aliasing the same bytes', async () => {
    const path = await writeRawFile({ w: f32x2(0), v: f32x2(0) }, new Uint8Array(8));
    await expectFormatError(path);
  });

  it('a hole in the data region', async () => {
    const path = await writeRawFile({ w: f32x2(0), v: f32x2(12) }, new Uint8Array(20));
    await expectFormatError(path, 'v');
  });

  it('trailing bytes no tensor owns', async () => {
    await expectFormatError(await writeRawFile({ w: f32x2(0) }, new Uint8Array(9)));
  });

  it('metadata that is not a map of strings', async () => {
    await expectFormatError(await writeRawFile({ __metadata__: { format: 1 } }, new Uint8Array(0)));
    await expectFormatError(await writeRawFile({ __metadata__: 'pt' }, new Uint8Array(0)));
  });

  it('a tensor entry that is not an object', async () => {
    await expectFormatError(await writeRawFile({ w: 'F32' }, new Uint8Array(0)), 'w');
  });
});
