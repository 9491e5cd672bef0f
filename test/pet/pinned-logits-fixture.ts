// The fixed input set of the pinned-logits test (test/pet/pinned-logits.test.ts)
// and the code that computes what it pins. The recorder
// (test/pet/record-pinned-logits.ts) ran this same file against the code before
// the PET-kind refactor; the test runs it against the code as it is now.

import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { ModelRunner, type TaskRow } from '../../src/engine/model-runner.js';
import type { GpuContext } from '../../src/gpu/context.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { DEMO_TASKS, ensureDemo } from '../../src/runtime/demo.js';
import { scheduleOperators } from '../../src/scheduler/operator-scheduler.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import { silentLogger } from '../../src/util/logger.js';

/** Values pinned for one demo task: its files on disk and its packed form. */
export interface PinnedTask {
  id: string;
  kind: string;
  /** sha256 of each file of the task directory (adapter_config.json without its absolute base path). */
  files: Record<string, string>;
  /** sha256 of the packed float block, the u32 block, and the attachments as JSON. */
  packedFloats: string;
  packedWords: string;
  attachments: string;
}

/** One row of a pinned run: exact f32 values (a JS number holds an f32 exactly). */
export interface PinnedRow {
  task: string | null;
  logits: number[] | null;
  /** The first POOLED_VALUES values of the pooled output (embedding tasks have no logits). */
  pooled: number[];
}

export interface PinnedRun {
  name: string;
  rows: PinnedRow[];
}

export interface PinnedValues {
  /** Adapter the GPU values were recorded on; other adapters round differently. */
  adapter: string;
  recordedAt: string;
  tasks: PinnedTask[];
  runs: PinnedRun[];
}

const POOLED_VALUES = 4;

export interface Demo {
  base: BertCheckpoint;
  registry: TaskRegistry;
  tasksDir: string;
}

/** Generate the demo (as `petserve serve` does with no model) under `root` and register its tasks. */
export async function loadDemo(root: string): Promise<Demo> {
  const layout = await ensureDemo(join(root, 'demo'), silentLogger);
  const base = await loadCheckpoint(layout.modelDir);
  const registry = new TaskRegistry(base, { logger: silentLogger });
  for (const t of DEMO_TASKS) await registry.register(t.id, join(layout.tasksDir, t.id));
  return { base, registry, tasksDir: layout.tasksDir };
}

const sha256 = (data: Uint8Array | string): string => createHash('sha256').update(data).digest('hex');

function bytesOf(a: Float32Array | Uint32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** JSON with Maps as their entries in insertion order (the order decides pool offsets). */
function attachmentsJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (v instanceof Map ? [...(v as Map<unknown, unknown>).entries()] : v));
}

export async function pinTasks(demo: Demo): Promise<PinnedTask[]> {
  const out: PinnedTask[] = [];
  for (const t of DEMO_TASKS) {
    const dir = join(demo.tasksDir, t.id);
    const files: Record<string, string> = {};
    for (const name of (await readdir(dir)).sort()) {
      const bytes = await readFile(join(dir, name));
      if (name === 'adapter_config.json') {
        const json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
        delete json['base_model_name_or_path'];
        files[name] = sha256(JSON.stringify(json));
      } else {
        files[name] = sha256(bytes);
      }
    }
    const lease = demo.registry.acquire(t.id);
    try {
      const { floats, words, ...attachments } = await lease.packed();
      out.push({
        id: t.id,
        kind: t.kind,
        files,
        packedFloats: sha256(bytesOf(floats)),
        packedWords: sha256(bytesOf(words)),
        attachments: sha256(attachmentsJson(attachments)),
      });
    } finally {
      lease.release();
    }
  }
  return out;
}

/** Deterministic token ids: a small LCG per row, [CLS] first, ids in 1000..vocab-1. */
function tokens(seed: number, length: number, vocab: number): number[] {
  const ids = [101];
  let x = seed >>> 0;
  while (ids.length < length) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    ids.push(1000 + (x % (vocab - 1000)));
  }
  return ids;
}

/** The fixed input set: two rows per demo task and two base rows, interleaved in one mixed batch. */
export function pinnedRows(vocab: number): TaskRow[] {
  const tasks: (string | null)[] = [...DEMO_TASKS.map((t) => t.id), null];
  const rows: TaskRow[] = [];
  for (const [pass, length] of [7, 19].entries()) {
    tasks.forEach((task, i) => rows.push({ task, inputIds: tokens(1000 * pass + i + 1, length + i, vocab) }));
  }
  return rows;
}

async function runRows(runner: ModelRunner, rows: TaskRow[], withOperatorScheduler: boolean): Promise<PinnedRow[]> {
  const result = await runner.runTasks(rows, { logits: true, pooled: true }, withOperatorScheduler ? { operators: scheduleOperators } : {});
  return result.rows.map((r, i) => ({
    task: rows[i]!.task,
    logits: r.logits ? Array.from(r.logits) : null,
    pooled: Array.from(r.pooled!.subarray(0, POOLED_VALUES)),
  }));
}

/** The pinned runs: f32 with the engine's default operator layout and with the operator scheduler; f16 when the adapter has it. */
export async function pinRuns(ctx: GpuContext, demo: Demo): Promise<PinnedRun[]> {
  const rows = pinnedRows(demo.base.config.vocabSize);
  const runs: PinnedRun[] = [];
  const dtypes = ctx.capabilities.shaderF16 ? (['f32', 'f16'] as const) : (['f32'] as const);
  for (const dtype of dtypes) {
    const runner = await ModelRunner.create(ctx, demo.base, { dtype, logger: silentLogger, registry: demo.registry, poolBytes: 64 << 20 });
    try {
      runs.push({ name: `${dtype} mixed batch`, rows: await runRows(runner, rows, false) });
      runs.push({ name: `${dtype} mixed batch, operator scheduler`, rows: await runRows(runner, rows, true) });
    } finally {
      await runner.dispose();
    }
  }
  return runs;
}
