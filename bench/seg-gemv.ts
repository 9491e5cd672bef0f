/**
 * Segmented GEMM layouts for LoRA shrink/expand: 'tiles' (32-row tiles, lanes
 * along rows, shaders/seg_gemm.wgsl) vs 'rows' (one tile per row, lanes along
 * columns, shaders/seg_gemv.wgsl: Punica's BGMV case), on the shapes a decode
 * step has: A adapters of mixed ranks, a few rows each. Both layouts run
 * interleaved in one process (median of rounds), so the ratio holds on a busy
 * machine. Sets the tuning knob `segGemvMaxMeanRows` (src/kernels/tuning.ts).
 *
 *   npm run bench -- seg-gemv [--adapters 22] [--hidden 256] [--inter 688] [--rows 1,2,3,5,8,12,32] [--out DIR]
 */
import { BatchEncoder, EncoderResources } from '../src/gpu/batch-encoder.js';
import { uploadStorage } from '../src/gpu/buffers.js';
import { GpuContext } from '../src/gpu/context.js';
import { NONE, segGemm, segGemmTables, type SegGemmSegment } from '../src/kernels/segmented.js';
import { silentLogger } from '../src/util/logger.js';
import { adapterSlug, commandLine, fileStamp, machineInfo, markdownTable, round, textTable, writeReport } from './lib/report.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');
const ADAPTERS = Number(args.get('adapters') ?? 22);
const K = Number(args.get('hidden') ?? 256);
const N = Number(args.get('inter') ?? 688);
const ROWS = (args.get('rows') ?? '1,2,3,5,8,12,32').split(',').map(Number);
const RANKS = [4, 8, 16, 32, 64];
const ROUNDS = 7;
const REPS = 30;

const ctx = await GpuContext.create({}, silentLogger);
const res = new EncoderResources(ctx);
const dev = ctx.device;
const maxRows = Math.max(...ROWS) * ADAPTERS;
const pool = uploadStorage(dev, new Float32Array(ADAPTERS * 64 * Math.max(K, N)).map(() => Math.random() - 0.5), 'pool');
const inp = uploadStorage(dev, new Float32Array(maxRows * Math.max(K, N)).map(() => Math.random() - 0.5), 'in');
const out = uploadStorage(dev, new Float32Array(maxRows * Math.max(K, N)), 'out');

/** A decode-like site: every adapter has `rows` rows; shrink X [rows, K] → U [rows, r], expand U → Y [rows, N]. */
function segments(kind: 'shrink' | 'expand', rows: number): SegGemmSegment[] {
  const s: SegGemmSegment[] = [];
  let scratch = 0;
  for (let a = 0; a < ADAPTERS; a++) {
    const r = RANKS[a % RANKS.length]!;
    const wOff = a * 64 * Math.max(K, N);
    s.push(
      kind === 'shrink'
        ? { rows, K, N: r, wOff, bOff: NONE, inOff: a * rows * K, ldIn: K, outOff: scratch, ldOut: r, scale: 1, act: 'none' }
        : { rows, K: r, N, wOff, bOff: NONE, inOff: scratch, ldIn: r, outOff: a * rows * N, ldOut: N, scale: 1, act: 'none' },
    );
    scratch += rows * r;
  }
  return s;
}

async function msPerDispatch(kind: 'shrink' | 'expand', rows: number, layout: 'tiles' | 'rows'): Promise<number> {
  const t = segGemmTables(segments(kind, rows), layout);
  const records = uploadStorage(dev, t.records, 'records');
  const tiles = uploadStorage(dev, t.tiles, 'tiles');
  const record = (enc: BatchEncoder): void => segGemm(enc, 'f32', t, { records, tiles, inp, pool, out }, kind === 'expand');
  const warm = new BatchEncoder(res);
  record(warm);
  await warm.submit();
  const enc = new BatchEncoder(res);
  for (let i = 0; i < REPS; i++) record(enc);
  enc.readback(out, 0, 4);
  const t0 = performance.now();
  await enc.submit();
  const ms = (performance.now() - t0) / REPS;
  records.destroy();
  tiles.destroy();
  return ms;
}

const median = (x: number[]): number => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)]!;
const results: { kind: string; rowsPerAdapter: number; tilesMs: number; rowsMs: number; speedup: number }[] = [];
for (const rows of ROWS) {
  for (const kind of ['shrink', 'expand'] as const) {
    const a: number[] = [];
    const b: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      a.push(await msPerDispatch(kind, rows, 'tiles'));
      b.push(await msPerDispatch(kind, rows, 'rows'));
    }
    const entry = { kind, rowsPerAdapter: rows, tilesMs: round(median(a)), rowsMs: round(median(b)), speedup: round(median(a) / median(b), 3) };
    results.push(entry);
    console.log(`${kind.padEnd(6)} rows/adapter ${String(rows).padStart(3)}: tiles ${entry.tilesMs.toFixed(3)} ms, rows ${entry.rowsMs.toFixed(3)} ms, rows layout ${entry.speedup.toFixed(2)}x`);
  }
}

const adapterName = ctx.capabilities.adapterName;
const date = new Date();
const table = {
  title: 'seg_gemm (tiles) vs seg_gemv (rows), ms per dispatch',
  headers: ['op', 'rows/adapter', 'tiles ms', 'rows ms', 'rows layout speed-up'],
  rows: results.map((r) => [r.kind, String(r.rowsPerAdapter), r.tilesMs.toFixed(3), r.rowsMs.toFixed(3), `${r.speedup.toFixed(2)}x`]),
};
console.log(`\n${textTable(table)}`);
const md = [
  `# Segmented GEMM layouts for LoRA (seg_gemm tiles vs seg_gemv rows)`,
  '',
  `${ADAPTERS} adapters of ranks ${RANKS.join('/')} per dispatch, hidden ${K}, expand width ${N}, f32; median of ${ROUNDS} interleaved rounds of ${REPS} dispatches. Machine: ${machineInfo().cpuModel} (${machineInfo().cpuCores} cores); adapter: ${adapterName}; ${date.toISOString()}.`,
  '',
  `Command: \`npm run bench -- seg-gemv ${process.argv.slice(2).join(' ')}\``,
  '',
  markdownTable(table),
  '',
  'Decode steps have a few rows per adapter; the auto layout takes `rows` when the mean rows per segment is at most `tuning.segGemvMaxMeanRows`.',
].join('\n');
const stem = `seg-gemv-${adapterSlug(adapterName)}-${fileStamp(date)}`;
await writeReport(args.get('out') ?? 'bench/results', stem, { command: commandLine(), machine: machineInfo(), adapter: adapterName, date: date.toISOString(), adapters: ADAPTERS, hidden: K, inter: N, results }, md);
console.log(`wrote bench/results/${stem}.{json,md}`);
pool.destroy();
inp.destroy();
out.destroy();
res.destroy();
ctx.destroy();
