import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join, relative } from 'node:path';

export interface MachineInfo {
  cpuModel: string;
  cpuCores: number;
  os: string;
  totalMemoryBytes: number;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpuCores: cpus.length,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    totalMemoryBytes: os.totalmem(),
  };
}

const shellQuote = (arg: string): string => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`);

/**
 * The command that reproduces this run: the node invocation as executed and,
 * when started through npm, the npm script line as typed.
 */
export function commandLine(): { node: string; npm: string | null } {
  const script = process.argv[1] ? relative(process.cwd(), process.argv[1]) : '';
  const args = process.argv.slice(2);
  const node = ['node', ...process.execArgv, script, ...args].map(shellQuote).join(' ');
  const event = process.env.npm_lifecycle_event;
  const npm = event ? [`npm run ${event}`, ...(args.length > 0 ? ['--', ...args.map(shellQuote)] : [])].join(' ') : null;
  return { node, npm };
}

/**
 * A short file-name-safe adapter id: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3',
 * 'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)' -> 'llvmpipe-mesa-25-0-7'.
 */
export function adapterSlug(adapterName: string): string {
  const words = adapterName
    .replace(/\(.*?\)/g, ' ')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 0);
  const kept: string[] = [];
  for (const w of words) {
    if (kept.length > 0 && [...kept, w].join('-').length > 24) break;
    kept.push(w);
  }
  return kept.join('-') || 'unknown-adapter';
}

/** YYYYMMDD-HHMM in UTC. */
export function fileStamp(date: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return (
    `${date.getUTCFullYear()}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}` +
    `-${p(date.getUTCHours())}${p(date.getUTCMinutes())}`
  );
}

export type Align = 'left' | 'right';
export interface Table {
  title: string;
  headers: string[];
  rows: string[][];
  /** Per column; numbers read best right-aligned. Defaults to left for the first column, right for the rest. */
  align?: Align[];
  note?: string;
}

const alignOf = (t: Table, i: number): Align => t.align?.[i] ?? (i === 0 ? 'left' : 'right');

export function textTable(t: Table): string {
  const widths = t.headers.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (alignOf(t, i) === 'right' ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const out = [t.title, line(t.headers), widths.map((w) => '-'.repeat(w)).join('  '), ...t.rows.map(line)];
  if (t.note) out.push(t.note);
  return out.join('\n');
}

export function markdownTable(t: Table): string {
  const row = (cells: string[]): string => `| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`;
  const rule = `|${t.headers.map((_, i) => (alignOf(t, i) === 'right' ? ' ---: ' : ' --- ')).join('|')}|`;
  const out = [`### ${t.title}`, '', row(t.headers), rule, ...t.rows.map(row)];
  if (t.note) out.push('', t.note);
  return out.join('\n');
}

export async function writeReport(
  dir: string,
  stem: string,
  json: unknown,
  markdown: string,
): Promise<{ jsonPath: string; markdownPath: string }> {
  await mkdir(dir, { recursive: true });
  const jsonPath = join(dir, `${stem}.json`);
  const markdownPath = join(dir, `${stem}.md`);
  await writeFile(jsonPath, JSON.stringify(json, null, 2) + '\n');
  await writeFile(markdownPath, markdown.endsWith('\n') ? markdown : markdown + '\n');
  return { jsonPath, markdownPath };
}

/** writeReport plus the run's SVG chart, and the one line that says where they went. */
export async function writeReportWithChart(dir: string, stem: string, json: unknown, markdown: string, svg: string): Promise<void> {
  await writeReport(dir, stem, json, markdown);
  await writeFile(join(dir, `${stem}.svg`), svg);
  console.log(`\nwrote ${join(dir, stem)}.{json,md,svg}`);
}

/** Fixed decimals for display; '-' for a missing value. */
export const fmt = (x: number | null | undefined, digits = 2): string =>
  x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);

/** Round for JSON so files stay readable (timings are not meaningful beyond ~4 significant digits). */
export const round = (x: number, digits = 4): number => Number(x.toFixed(digits));
