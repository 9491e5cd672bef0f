import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import type { BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { SafetensorsFile, writeSafetensors } from '../../src/model/safetensors.js';
import type { TensorToWrite } from '../../src/model/safetensors.js';
import { loadPetDirectory } from '../../src/pet/formats/load.js';
import { PET_KINDS } from '../../src/pet/types.js';
import { runCli } from '../helpers/cli.js';

let root: string;
let model: string;
let base: BertCheckpoint;

const cli = runCli;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-pet-cli-'));
  model = join(root, 'base');
  await initModel({ preset: 'bert-tiny', vocabSize: 300, maxPositions: 64, outDir: model, numLabels: 2 });
  base = await loadCheckpoint(model);
});
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('petserve init-pet', () => {
  it.each(PET_KINDS.map((k) => [k]))('--kind %s writes a PET that loads, and prints a one-line JSON summary', async (kind) => {
    const out = join(root, `cli-${kind}`);
    const r = await cli('init-pet', '--model', model, '--kind', kind, '--out', out, '--seed', '4');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ out, kind, format: kind === 'lora' || kind === 'ia3' ? 'peft' : 'bundle', seed: 4, num_labels: 2 });
    expect(summary['parameters']).toBeGreaterThan(0);
    expect((await loadPetDirectory(out, base)).pet.kind).toBe(kind);
  });

  it('passes --rank, --density, --bottleneck and --num-labels through', async () => {
    const lora = join(root, 'cli-rank');
    expect((await cli('init-pet', '--model', model, '--kind', 'lora', '--out', lora, '--rank', '3', '--num-labels', '0')).code).toBe(0);
    const l = await loadPetDirectory(lora, base);
    expect(l.pet.kind === 'lora' && l.pet.sites[0]!.rank).toBe(3);
    expect(l.head).toBeNull();
    const mask = join(root, 'cli-density');
    expect((await cli('init-pet', '--model', model, '--kind', 'mask', '--out', mask, '--density', '0.25')).code).toBe(0);
    const m = await loadPetDirectory(mask, base);
    expect(m.pet.kind === 'mask' && m.pet.sites[0]!.removed.length).toBe(128 * 128 / 4);
    const adapter = join(root, 'cli-bottleneck');
    expect((await cli('init-pet', '--model', model, '--kind', 'adapter', '--out', adapter, '--bottleneck', '5')).code).toBe(0);
    const a = await loadPetDirectory(adapter, base);
    expect(a.pet.kind === 'adapter' && a.pet.sites[0]!.bottleneck).toBe(5);
  });
});

describe('petserve convert-pet', () => {
  it('converts a fine-tuned checkpoint into a diff bundle and reports ignored differences', async () => {
    const ftDir = join(root, 'ft');
    const file = await SafetensorsFile.open(join(model, 'model.safetensors'));
    const tensors: Record<string, TensorToWrite> = {};
    for (const name of file.names()) tensors[name] = { dtype: 'F32', shape: file.info(name)!.shape, data: file.readFloat32(name) };
    (tensors['bert.encoder.layer.1.attention.self.value.weight']!.data as Float32Array)[7]! += 0.25;
    (tensors['bert.encoder.layer.0.output.LayerNorm.bias']!.data as Float32Array)[0]! += 0.25;
    await mkdir(ftDir, { recursive: true });
    await writeSafetensors(join(ftDir, 'model.safetensors'), tensors);
    await writeFile(join(ftDir, 'config.json'), await readFile(join(model, 'config.json')));

    const out = join(root, 'converted');
    const r = await cli('convert-pet', '--base', model, '--finetuned', ftDir, '--kind', 'diff', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout) as { kind: string; sites: number; notes: string[] };
    expect(summary).toMatchObject({ out, kind: 'diff', sites: 1, num_labels: 2 });
    expect(summary.notes.join(' ')).toMatch(/encoder\.layer\.0\.output\.LayerNorm\.bias/);
    const loaded = await loadPetDirectory(out, base);
    expect(loaded.pet.kind === 'diff' && [...loaded.pet.sites[0]!.indices]).toEqual([7]);

    const bitfit = await cli('convert-pet', '--base', model, '--finetuned', ftDir, '--kind', 'bitfit', '--out', join(root, 'converted-bitfit'));
    expect(bitfit.code).toBe(3);
    expect(bitfit.stderr).toMatch(/PetFormatError: .*not a BitFit fine-tune.*'encoder\.layer\.1\.attention\.self\.value\.weight'/);
    expect(bitfit.stdout).toBe('');
  });
});

describe('pet commands: bad arguments', () => {
  it('give a clear message and a non-zero exit code', async () => {
    const x = join(root, 'x');
    const cases: [string[], number, RegExp][] = [
      [['init-pet', '--model', model, '--kind', 'prefix', '--out', x], 2, /--kind must be one of lora, adapter, diff, mask, bitfit, ia3, got 'prefix'/],
      [['init-pet', '--model', model, '--kind', 'lora', '--out', x, '--rank', '0'], 2, /--rank must be an integer >= 1, got '0'/],
      [['init-pet', '--model', model, '--kind', 'lora', '--out', x, '--rank', '500'], 2, /rank must be an integer in 1\.\.128/],
      [['init-pet', '--model', model, '--kind', 'diff', '--out', x, '--rank', '4'], 2, /rank applies to kind lora only, not diff/],
      [['init-pet', '--model', model, '--kind', 'diff', '--out', x, '--density', 'abc'], 2, /--density must be a number, got 'abc'/],
      [['init-pet', '--model', model, '--kind', 'mask', '--out', x, '--density', '0.7'], 2, /density must be in \(0, 0\.5\]/],
      [['init-pet', '--model', model, '--kind', 'lora', '--out', x, '--seed', '1.5'], 2, /--seed must be an integer/],
      [['init-pet', '--model', join(root, 'absent'), '--kind', 'lora', '--out', x], 3, /config\.json/],
      [['init-pet', '--model', model, '--kind', 'lora', '--out', join(root, 'cli-diff')], 2, /already holds pet\.json/],
      [['convert-pet', '--base', model, '--finetuned', model, '--kind', 'lora', '--out', x], 2, /--kind must be diff or bitfit, got 'lora'/],
      [['convert-pet', '--base', model, '--finetuned', model, '--kind', 'bitfit', '--out', x, '--density', '0.1'], 2, /--density applies to --kind diff only/],
      [['convert-pet', '--base', model, '--finetuned', model, '--kind', 'diff', '--out', x, '--density', '0.9'], 2, /density must be in \(0, 0\.5\]/],
    ];
    for (const [args, code, message] of cases) {
      const r = await cli(...args);
      expect({ args, code: r.code }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    }
  });

  it('a missing required option is a usage error', async () => {
    expect((await cli('init-pet', '--model', model, '--kind', 'lora')).code).toBe(2);
    expect((await cli('convert-pet', '--base', model, '--kind', 'diff', '--out', join(root, 'y'))).code).toBe(2);
  });
});
