/** Command-line flags of the benchmark scripts (`--name value`), one parser for all of them. */
const args = process.argv.slice(2);

/** The arguments after the script name. */
export const benchArgs: readonly string[] = args;

export function flag(name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

export function intFlag(name: string, fallback: number, min = 1): number {
  const v = flag(name);
  const n = v === undefined ? fallback : Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got ${v}`);
  return n;
}
