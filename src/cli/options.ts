import { UsageError } from './exit-codes.js';

export function parseIntOption(flag: string, value: string | undefined, min = Number.MIN_SAFE_INTEGER): number {
  const n = Number(value);
  if (value === undefined || value.trim() === '' || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${flag} must be an integer${min > Number.MIN_SAFE_INTEGER ? ` >= ${min}` : ''}, got '${value}'`);
  }
  return n;
}

/** Parse a JSON array of non-empty integer arrays (ragged rows allowed). */
export function parseIdMatrix(flag: string, text: string): number[][] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${flag}: not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(value) || value.length === 0) {
    throw new UsageError(`${flag}: expected a non-empty JSON array of rows, e.g. [[101, 2000, 102]]`);
  }
  return value.map((row: unknown, i) => {
    if (!Array.isArray(row) || row.length === 0) throw new UsageError(`${flag}[${i}]: expected a non-empty array of integers`);
    return row.map((v: unknown, j) => {
      if (typeof v !== 'number' || !Number.isInteger(v)) {
        throw new UsageError(`${flag}[${i}][${j}]: ${JSON.stringify(v)} is not an integer`);
      }
      return v;
    });
  });
}

/** Parse `--task NAME=DIR` values. */
export function parseTaskFlags(values: string[]): Map<string, string> {
  const tasks = new Map<string, string>();
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0 || eq === v.length - 1) throw new UsageError(`--task expects NAME=PETDIR, got '${v}'`);
    const name = v.slice(0, eq);
    if (tasks.has(name)) throw new UsageError(`--task ${name} given twice`);
    tasks.set(name, v.slice(eq + 1));
  }
  return tasks;
}


/**
 * The JSON objects of a JSONL requests file, each passed to `parse` with its
 * `file:line` for messages; blank lines skipped; no line at all is an error.
 */
export function parseJsonlObjects<T>(text: string, file: string, parse: (o: Record<string, unknown>, where: string) => T): T[] {
  const out: T[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new UsageError(`${where}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError(`${where}: expected a JSON object`);
    out.push(parse(v as Record<string, unknown>, where));
  });
  if (out.length === 0) throw new UsageError(`${file}: no requests`);
  return out;
}
