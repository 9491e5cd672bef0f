// The embedded default: `petserve serve` with no model configured generates a
// small random model and a few tasks of different PET kinds once, caches them
// in server.demoDir, and serves them, so a first run needs no download.

import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { loadCheckpoint } from '../model/checkpoint.js';
import { initModel } from '../model/init-model.js';
import type { PresetName } from '../model/presets.js';
import { pathExists } from '../pet/formats/common.js';
import { initPet } from '../pet/init-pet.js';
import type { PetKind } from '../pet/types.js';
import { ConfigError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export interface DemoLayout {
  modelDir: string;
  tasksDir: string;
}

interface DemoTask {
  id: string;
  kind: PetKind;
  /** 0 = embedding task. */
  numLabels: number;
}

export const DEMO_PRESET: PresetName = 'bert-mini';
/** The demo base model's id (its directory is plain `model`, which would read poorly in /v1/models). */
export const DEMO_MODEL_ID = 'demo-base';
/** One task per PET kind; one is an embedding task and one has three labels, so every answer shape shows up. */
export const DEMO_TASKS: readonly DemoTask[] = [
  { id: 'demo-lora', kind: 'lora', numLabels: 2 },
  { id: 'demo-adapter', kind: 'adapter', numLabels: 3 },
  { id: 'demo-diff', kind: 'diff', numLabels: 2 },
  { id: 'demo-mask', kind: 'mask', numLabels: 2 },
  { id: 'demo-ia3', kind: 'ia3', numLabels: 2 },
  { id: 'demo-embedding', kind: 'bitfit', numLabels: 0 },
];

/** Written last into a finished demo directory; its absence means the directory is not ours. */
const MARKER_FILE = 'petserve-demo.json';
/** Bumped when the demo's content changes, so an old cache is regenerated. */
const DEMO_VERSION = 1;

/**
 * The demo model and tasks under `demoDir`, generated on first use. Generation
 * happens in a sibling temporary directory renamed into place, so a server and
 * a queue worker starting together never see a half-written demo.
 */
export async function ensureDemo(demoDir: string, logger: Logger): Promise<DemoLayout> {
  const layout: DemoLayout = { modelDir: join(demoDir, 'model'), tasksDir: join(demoDir, 'tasks') };
  if (await isCurrentDemo(demoDir)) return layout;
  if (await pathExists(demoDir)) {
    if (!(await pathExists(join(demoDir, MARKER_FILE)))) {
      throw new ConfigError(`server.demoDir ${demoDir} exists but holds no PetServe demo; remove it or point server.demoDir elsewhere`);
    }
    logger.info({ demoDir }, 'demo cache is from an older version; regenerating');
    await rm(demoDir, { recursive: true, force: true });
  }
  logger.info({ demoDir, preset: DEMO_PRESET, tasks: DEMO_TASKS.map((t) => t.id) }, 'no model configured: generating the demo model and tasks (once)');
  await mkdir(dirname(demoDir), { recursive: true });
  const staging = `${demoDir}.partial-${randomUUID()}`;
  try {
    await generateDemo(staging);
    try {
      await rename(staging, demoDir);
    } catch (err) {
      // Another process finished first: its demo is as good as ours.
      if (!(await isCurrentDemo(demoDir))) throw err;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return layout;
}

async function isCurrentDemo(demoDir: string): Promise<boolean> {
  try {
    const marker = JSON.parse(await readFile(join(demoDir, MARKER_FILE), 'utf8')) as { version?: unknown };
    return marker.version === DEMO_VERSION;
  } catch {
    return false;
  }
}

async function generateDemo(dir: string): Promise<void> {
  const modelDir = join(dir, 'model');
  await initModel({ preset: DEMO_PRESET, outDir: modelDir, numLabels: 2, seed: 1 });
  const model = await loadCheckpoint(modelDir);
  for (const [i, task] of DEMO_TASKS.entries()) {
    await initPet({ model, kind: task.kind, outDir: join(dir, 'tasks', task.id), seed: 100 + i, numLabels: task.numLabels });
  }
  await writeFile(
    join(dir, MARKER_FILE),
    `${JSON.stringify({ version: DEMO_VERSION, preset: DEMO_PRESET, tasks: DEMO_TASKS, note: 'random weights: answers are deterministic but meaningless' }, null, 2)}\n`,
  );
}
