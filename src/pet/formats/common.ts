// Pieces shared by the PET importers, writers and kinds: a safetensors reader
// that checks dtype, shape and finiteness with the stored name in every
// message, JSON reading, message helpers, and the PET directory writer.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../model/safetensors.js';
import { PetFormatError, PetServeError } from '../../util/errors.js';

// ------------------------------------------------------------------ tensor reading

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);
const INDEX_DTYPES = new Set(['I32', 'I64']);

export function formatShape(shape: readonly (number | string)[]): string {
  return `[${shape.join(', ')}]`;
}

/** Names of things in a refusal message: the first few quoted, then a count. */
export function listNames(names: readonly string[], max = 5): string {
  const shown = names.slice(0, max).map((n) => `'${n}'`).join(', ');
  return names.length > max ? `${shown} (and ${names.length - max} more)` : shown;
}

/** First NaN/±Inf of an array, as an index and a word for the message; null when all finite. */
export function firstNonFinite(data: Float32Array): { index: number; value: string } | null {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isFinite(v)) return { index: i, value: Number.isNaN(v) ? 'NaN' : v > 0 ? '+Inf' : '-Inf' };
  }
  return null;
}

/**
 * A PET's safetensors file. Every read checks dtype, shape and finiteness and
 * names the stored tensor on failure; `unread()` lists the tensors no reader
 * asked for, which importers refuse as not understood.
 */
export class PetTensorFile {
  private readonly read = new Set<string>();

  /** `label` names the file in messages (relative to the PET directory when loaded from one). */
  private constructor(
    private readonly file: SafetensorsFile,
    readonly path: string,
    readonly label: string,
  ) {}

  static async open(path: string, label = path): Promise<PetTensorFile> {
    try {
      return new PetTensorFile(await SafetensorsFile.open(path), path, label);
    } catch (err) {
      const message = relabel((err as Error).message, path, label);
      if (err instanceof PetServeError) throw new PetFormatError(message, { cause: err });
      throw new PetFormatError(`cannot read ${label}: ${message}`, { cause: err });
    }
  }

  names(): string[] {
    return this.file.names();
  }

  has(name: string): boolean {
    return this.file.has(name);
  }

  shape(name: string): number[] {
    const info = this.file.info(name);
    if (info === undefined) throw new PetFormatError(`${this.label}: missing tensor '${name}'`);
    return info.shape;
  }

  /** Mark a tensor as understood without reading it. */
  accept(name: string): void {
    this.read.add(name);
  }

  unread(): string[] {
    return this.names().filter((n) => !this.read.has(n));
  }

  /**
   * A float tensor as f32. `expected` may hold `null` for a dimension that is
   * free (a LoRA rank); `context` explains the expectation in the message.
   */
  readFloat(name: string, expected: readonly (number | null)[], context = ''): Float32Array {
    const info = this.checkShape(name, expected, context);
    if (!FLOAT_DTYPES.has(info.dtype)) {
      throw new PetFormatError(`${this.label}: tensor '${name}' has dtype ${info.dtype}, expected F32, F16 or BF16`);
    }
    const data = this.wrap(() => this.file.readFloat32(name));
    const bad = firstNonFinite(data);
    if (bad) throw new PetFormatError(`${this.label}: tensor '${name}' has a non-finite value (${bad.value}) at index ${bad.index}`);
    this.read.add(name);
    return data;
  }

  /** A 1-D index tensor (I32 or I64) as int32. */
  readIndices(name: string, context = ''): Int32Array {
    const info = this.checkShape(name, [null], context);
    if (!INDEX_DTYPES.has(info.dtype)) {
      throw new PetFormatError(`${this.label}: tensor '${name}' has dtype ${info.dtype}, expected I32 or I64`);
    }
    const data = this.wrap(() => this.file.readInt(name));
    this.read.add(name);
    return data;
  }

  private checkShape(name: string, expected: readonly (number | null)[], context: string): { dtype: string; shape: number[] } {
    const info = this.file.info(name);
    if (info === undefined) throw new PetFormatError(`${this.label}: missing tensor '${name}'${context ? ` (${context})` : ''}`);
    const fits = info.shape.length === expected.length && expected.every((d, i) => d === null || d === info.shape[i]);
    if (!fits) {
      throw new PetFormatError(
        `${this.label}: tensor '${name}' has shape ${formatShape(info.shape)}, expected ` +
          `${formatShape(expected.map((d) => d ?? '*'))}${context ? ` (${context})` : ''}`,
      );
    }
    return info;
  }

  private wrap<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof PetServeError) throw new PetFormatError(relabel(err.message, this.path, this.label), { cause: err });
      throw err;
    }
  }
}

/** Both tensors of a pair, or neither. */
export function requireBoth(file: PetTensorFile, a: string, b: string): void {
  if (file.has(a) && !file.has(b)) throw new PetFormatError(`${file.label}: tensor '${a}' is present but '${b}' is missing`);
  if (file.has(b) && !file.has(a)) throw new PetFormatError(`${file.label}: tensor '${b}' is present but '${a}' is missing`);
}

/**
 * A lower layer's message (safetensors reader, Node's fs) names the file by
 * the path it was given; PET messages name it by `label` instead, so a server
 * never shows where its task directories live.
 */
export function relabel(message: string, path: string, label: string): string {
  return path === label ? message : message.split(path).join(label);
}

// ------------------------------------------------------------------ misc

/** A JSON object file; `label` names it in messages. */
export async function readJsonObject(path: string, label = path): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PetFormatError(`cannot read ${label}: ${relabel((err as Error).message, path, label)}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new PetFormatError(`${label} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new PetFormatError(`${label}: expected a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** zod issues as one line: "path: message; path: message". */
export function formatIssues(issues: readonly { path: readonly PropertyKey[]; message: string }[]): string {
  return issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`).join('; ');
}

export { pathExists } from '../../util/fs.js';

/** What a PET writer put on disk. */
export interface WrittenPet {
  dir: string;
  files: string[];
  tensorCount: number;
  /** Stored values (floats and indices), the classifier included. */
  parameterCount: number;
}

/** Write a PET directory: one JSON file (2-space indent) + one safetensors file. */
export async function writePetFiles(
  dir: string,
  json: { name: string; json: unknown },
  tensorsFile: string,
  tensors: Record<string, TensorToWrite>,
): Promise<WrittenPet> {
  await mkdir(dir, { recursive: true });
  const jsonPath = join(dir, json.name);
  const tensorsPath = join(dir, tensorsFile);
  await writeSafetensors(tensorsPath, tensors, { format: 'pt' });
  await writeFile(jsonPath, JSON.stringify(json.json, null, 2) + '\n');
  const values = Object.values(tensors);
  return {
    dir,
    files: [jsonPath, tensorsPath],
    tensorCount: values.length,
    parameterCount: values.reduce((n, t) => n + t.data.length, 0),
  };
}
