// Random but realistic PETs for a given base model, written the way they come
// in practice: LoRA and IA³ as Hugging Face PEFT directories, the other kinds
// as PetServe bundles. Every delta is large enough to move the logits visibly
// (a PET that computes nothing would pass any engine test). Deterministic by seed.

import { join } from 'node:path';

import type { BertCheckpoint } from '../model/checkpoint.js';
import { InvalidInputError } from '../util/errors.js';
import { Rng } from '../util/random.js';
import { PET_MANIFEST_FILE, writePetBundle } from './formats/bundle.js';
import type { WrittenPet } from './formats/bundle.js';
import { pathExists } from './formats/common.js';
import { PEFT_CONFIG_FILE, writePeftDirectory } from './formats/peft.js';
import { resolveId2label, type TaskHead } from './head.js';
import { INIT_OPTIONS } from './kinds/kind.js';
import { PET_KINDS, petKindModule, petKindModules, type AnyPetKindModule } from './kinds/index.js';
import type { PetBundle, PetKind } from './types.js';

export interface InitPetOptions {
  model: BertCheckpoint;
  kind: PetKind;
  outDir: string;
  /** LoRA rank (default 8). */
  rank?: number;
  /** diff: fraction of each weight changed (default 0.01); mask: fraction removed (default 0.1). */
  density?: number;
  seed?: number;
  /** Classifier labels; 0 = embedding task. Default: the base model's label count, or 2 when it has none. */
  numLabels?: number;
  /** Adapter bottleneck (default 16). */
  bottleneck?: number;
}

export interface InitPetResult extends WrittenPet {
  kind: PetKind;
  format: PetBundle['format'];
  bundle: PetBundle;
}

// As init-model's classifier: large enough that labels differ visibly.
const HEAD_WEIGHT_STD = 0.2;
const HEAD_BIAS_STD = 0.02;

/** Draw a random PET in memory (what initPet writes). */
export function generatePet(opts: Omit<InitPetOptions, 'outDir'> & { source?: string }): PetBundle {
  const kind = checkOptions(opts);
  const rng = new Rng(opts.seed ?? 0);
  const pet = kind.generate({ model: opts.model, rng, options: { rank: opts.rank, density: opts.density, bottleneck: opts.bottleneck } });
  return {
    pet,
    head: randomHead(rng, opts),
    source: opts.source ?? `random ${opts.kind} PET (seed ${opts.seed ?? 0})`,
    format: kind.initFormat.format,
  };
}

/** Write a random PET of `kind` for `model` into `outDir` (PEFT for lora / ia3, a bundle otherwise). */
export async function initPet(opts: InitPetOptions): Promise<InitPetResult> {
  const bundle = generatePet({ ...opts, source: opts.outDir });
  const other = bundle.format === 'peft' ? PET_MANIFEST_FILE : PEFT_CONFIG_FILE;
  if (await pathExists(join(opts.outDir, other))) {
    throw new InvalidInputError(`${opts.outDir} already holds ${other}; write the ${opts.kind} PET to another directory`);
  }
  const init = petKindModule(opts.kind)!.initFormat;
  const written =
    init.format === 'peft'
      ? await writePeftDirectory(opts.outDir, bundle, opts.model.config, {
          baseModelNameOrPath: opts.model.dir,
          targetModules: [...init.targetModules],
          ...(init.feedforwardModules ? { feedforwardModules: [...init.feedforwardModules] } : {}),
        })
      : await writePetBundle(opts.outDir, bundle, opts.model.config);
  return { ...written, kind: opts.kind, format: bundle.format, bundle };
}

function randomHead(rng: Rng, opts: Omit<InitPetOptions, 'outDir'>): TaskHead | null {
  const config = opts.model.config;
  const rows = opts.numLabels ?? (opts.model.numLabels > 0 ? opts.model.numLabels : 2);
  if (rows === 0) return null;
  return {
    weight: rng.fillNormal(new Float32Array(rows * config.hiddenSize), 0, HEAD_WEIGHT_STD),
    bias: rng.fillNormal(new Float32Array(rows), 0, HEAD_BIAS_STD),
    id2label: resolveId2label(null, rows, config, 'init-pet'),
  };
}

/** The module of a valid kind with valid options; the refusals say which option and why. */
function checkOptions(opts: Omit<InitPetOptions, 'outDir'>): AnyPetKindModule {
  const fail = (message: string): never => {
    throw new InvalidInputError(`init-pet: ${message}`);
  };
  const kind = petKindModule(opts.kind) ?? fail(`kind must be one of ${PET_KINDS.join(', ')}, got ${JSON.stringify(opts.kind)}`);
  for (const option of INIT_OPTIONS) {
    if (opts[option] !== undefined && kind.initOptions[option] === undefined) {
      const takers = petKindModules().filter((m) => m.initOptions[option] !== undefined).map((m) => m.kind);
      fail(`${option} applies to kind ${takers.join(' / ')} only, not ${opts.kind}`);
    }
  }
  const refusal = kind.checkInitOptions({ rank: opts.rank, density: opts.density, bottleneck: opts.bottleneck }, opts.model.config);
  if (refusal !== null) fail(refusal);
  if (opts.numLabels !== undefined && (!Number.isInteger(opts.numLabels) || opts.numLabels < 0)) {
    fail(`numLabels must be a non-negative integer, got ${opts.numLabels}`);
  }
  if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) fail(`seed must be an integer, got ${opts.seed}`);
  return kind;
}
