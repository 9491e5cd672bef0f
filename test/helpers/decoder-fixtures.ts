import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DecoderPresetName } from '../../src/model/decoder-presets.js';
import { initDecoderModel } from '../../src/model/init-decoder.js';
import { writeRandomPeftLora } from '../../src/pet/formats/peft-writer.js';

export interface AdapterSpec {
  name: string;
  targetModules: string[];
  rank: number;
  alpha?: number;
  useRslora?: boolean;
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  modulesToSave?: string[];
}

/** A random decoder preset and PEFT LoRA adapters for it, in a temp dir (call cleanup in afterAll). */
export async function decoderFixture(
  preset: DecoderPresetName,
  adapters: readonly AdapterSpec[] = [],
  opts: { seed?: number; dtype?: 'f32' | 'f16' | 'bf16' } = {},
): Promise<{ dir: string; tasks: Map<string, string>; cleanup(): void }> {
  const root = mkdtempSync(join(tmpdir(), `petserve-${preset}-`));
  const dir = join(root, 'model');
  await initDecoderModel({ preset, outDir: dir, seed: opts.seed ?? 7, ...(opts.dtype ? { dtype: opts.dtype } : {}) });
  const tasks = new Map<string, string>();
  for (const [i, a] of adapters.entries()) {
    const out = join(root, a.name);
    await writeRandomPeftLora(out, {
      modelDir: dir,
      targetModules: a.targetModules,
      rank: a.rank,
      seed: 100 + i,
      ...(a.alpha !== undefined ? { alpha: a.alpha } : {}),
      ...(a.useRslora ? { useRslora: true } : {}),
      ...(a.rankPattern ? { rankPattern: a.rankPattern } : {}),
      ...(a.alphaPattern ? { alphaPattern: a.alphaPattern } : {}),
      ...(a.modulesToSave ? { modulesToSave: a.modulesToSave } : {}),
    });
    tasks.set(a.name, out);
  }
  return { dir, tasks, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** max |got − ref| / max |ref| over one logits row. */
export function relativeError(got: Float32Array, ref: Float64Array, offset: number, width: number): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < width; i++) {
    err = Math.max(err, Math.abs(got[i]! - ref[offset + i]!));
    scale = Math.max(scale, Math.abs(ref[offset + i]!));
  }
  return err / scale;
}

/**
 * A random PEFT IA³ directory for a decoder: `targetModules` (PEFT list form)
 * scaled by vectors around 1, `feedforwardModules` on their input.
 */
export async function writeRandomIa3(
  dir: string,
  modelDir: string,
  opts: { targetModules: string[]; feedforwardModules: string[]; seed: number },
): Promise<void> {
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { loadDecoderCheckpoint } = await import('../../src/model/decoder-checkpoint.js');
  const { writeSafetensors } = await import('../../src/model/safetensors.js');
  const { Rng } = await import('../../src/util/random.js');
  const ckpt = await loadDecoderCheckpoint(modelDir);
  const rng = new Rng(opts.seed);
  const selected = (m: string, list: string[]): boolean => list.some((t) => m === t || m.endsWith(`.${t}`));
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const site of ckpt.family.linearSites(ckpt.config)) {
    if (!selected(site.module, opts.targetModules)) continue;
    const input = site.module.endsWith(opts.feedforwardModules.find((f) => site.module.endsWith(f)) ?? '\u0000');
    const n = input ? site.inDim : site.outDim;
    const data = Float32Array.from({ length: n }, () => 1 + 0.5 * (2 * rng.next() - 1));
    tensors[`base_model.model.${site.module}.ia3_l`] = { dtype: 'F32', shape: input ? [1, n] : [n, 1], data };
  }
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'adapter_config.json'),
    JSON.stringify({ peft_type: 'IA3', task_type: 'CAUSAL_LM', target_modules: opts.targetModules, feedforward_modules: opts.feedforwardModules, init_ia3_weights: true }),
  );
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors);
}
