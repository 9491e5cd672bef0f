// PetServe bundles: pet.json (manifest) + pet.safetensors, for every PET kind.
// Format contract: docs/pet-format.md ("PetServe bundle"). The kind-specific
// parts (its pet.json section, its tensors) are read and written by the kind's
// module (src/pet/kinds/); this file holds what every bundle shares.

import { join } from 'node:path';

import { z } from 'zod';

import type { BertConfig } from '../../model/bert-config.js';
import type { BertCheckpoint } from '../../model/checkpoint.js';
import type { TensorToWrite } from '../../model/safetensors.js';
import { PetFormatError } from '../../util/errors.js';
import { CLASSIFIER_BIAS, CLASSIFIER_WEIGHT, readHead } from '../head.js';
import type { BundleWriteContext } from '../kinds/kind.js';
import { PET_KINDS, isPetKind, petKindModule, petKindModules } from '../kinds/index.js';
import type { PetBundle, PetKind } from '../types.js';
import { validatePet, validatePetForConfig } from '../validate.js';
import { PetTensorFile, formatIssues, listNames, readJsonObject, writePetFiles, type WrittenPet } from './common.js';

export const PET_MANIFEST_FILE = 'pet.json';
export const PET_TENSORS_FILE = 'pet.safetensors';
export const PET_FORMAT_NAME = 'petserve-pet';
export const PET_FORMAT_VERSION = 1;

const positiveInt = z.number().int().positive();

/** Kinds with a pet.json section of their own, named after the kind. */
const SECTION_KINDS = petKindModules().filter((m) => m.section !== null);

// Strict objects: a key this version does not know is refused by name rather
// than silently ignored (it may change what the task computes).
const manifestSchema = z.strictObject({
  format: z.literal(PET_FORMAT_NAME),
  version: z.literal(PET_FORMAT_VERSION),
  kind: z.enum(PET_KINDS as [PetKind, ...PetKind[]]),
  base_model: z
    .strictObject({ hidden_size: positiveInt, num_hidden_layers: positiveInt, intermediate_size: positiveInt })
    .optional(),
  ...Object.fromEntries(SECTION_KINDS.map((m) => [m.kind, m.section!.schema.optional()])),
  head: z.strictObject({ id2label: z.array(z.string()).min(1) }).optional(),
});

type Manifest = z.infer<typeof manifestSchema> & Partial<Record<PetKind, unknown>>;

function parseManifest(raw: Record<string, unknown>, path: string, config: BertConfig): Manifest {
  // The three identity fields first, with messages that say what is expected.
  if (raw['format'] !== PET_FORMAT_NAME) {
    throw new PetFormatError(`${path}: format is ${JSON.stringify(raw['format'])}, expected "${PET_FORMAT_NAME}"`);
  }
  if (raw['version'] !== PET_FORMAT_VERSION) {
    throw new PetFormatError(
      `${path}: version ${JSON.stringify(raw['version'])} is not supported (this PetServe reads version ${PET_FORMAT_VERSION})`,
    );
  }
  if (!isPetKind(raw['kind'])) {
    throw new PetFormatError(`${path}: kind ${JSON.stringify(raw['kind'])} is not a PET kind (${PET_KINDS.join(', ')})`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) throw new PetFormatError(`${path}: invalid manifest: ${formatIssues(parsed.error.issues)}`);
  const manifest: Manifest = parsed.data;

  for (const { kind: section } of SECTION_KINDS) {
    if (manifest[section] !== undefined && section !== manifest.kind) {
      throw new PetFormatError(`${path}: section "${section}" does not apply to kind "${manifest.kind}"`);
    }
  }
  if (petKindModule(manifest.kind)!.section?.required && manifest[manifest.kind] === undefined) {
    throw new PetFormatError(`${path}: kind "${manifest.kind}" needs a "${manifest.kind}" section`);
  }

  if (manifest.base_model) {
    const expected: [string, number, number][] = [
      ['hidden_size', manifest.base_model.hidden_size, config.hiddenSize],
      ['num_hidden_layers', manifest.base_model.num_hidden_layers, config.numHiddenLayers],
      ['intermediate_size', manifest.base_model.intermediate_size, config.intermediateSize],
    ];
    for (const [key, pet, served] of expected) {
      if (pet !== served) {
        throw new PetFormatError(`${path}: base_model.${key} is ${pet} but the serving model has ${key} ${served}`);
      }
    }
  }
  return manifest;
}

/**
 * Load and validate a pet.json + pet.safetensors directory against the base
 * model. Messages name the files relative to `dir` (a server's task
 * directories are nobody's business).
 */
export async function loadPetBundle(dir: string, base: BertCheckpoint): Promise<PetBundle> {
  const manifestPath = PET_MANIFEST_FILE;
  const manifest = parseManifest(await readJsonObject(join(dir, PET_MANIFEST_FILE), manifestPath), manifestPath, base.config);
  const file = await PetTensorFile.open(join(dir, PET_TENSORS_FILE), PET_TENSORS_FILE);
  const pet = petKindModule(manifest.kind)!.readBundle({ section: manifest[manifest.kind], file, base, manifestPath });
  const head = readHead(file, CLASSIFIER_WEIGHT, CLASSIFIER_BIAS, manifest.head?.id2label ?? null, base.config, manifestPath);
  const unknown = file.unread();
  if (unknown.length > 0) {
    throw new PetFormatError(
      `${file.label}: tensors not understood for kind "${manifest.kind}": ${listNames(unknown)} ` +
        `(names follow docs/pet-format.md, without a "bert." prefix)`,
    );
  }
  const bundle: PetBundle = { pet, head, source: dir, format: 'bundle' };
  validatePet(bundle, base, PET_TENSORS_FILE);
  return bundle;
}

// ------------------------------------------------------------------ writer

export type { WrittenPet } from './common.js';

/** Write a bundle as pet.json + pet.safetensors (F32 values, I32 indices). Refuses an invalid bundle. */
export async function writePetBundle(dir: string, bundle: PetBundle, baseConfig: BertConfig): Promise<WrittenPet> {
  validatePetForConfig(bundle, baseConfig);
  const tensors: Record<string, TensorToWrite> = {};
  const f32 = (name: string, data: Float32Array, shape: number[]): void => {
    tensors[name] = { dtype: 'F32', shape, data };
  };
  const i32 = (name: string, data: Int32Array): void => {
    tensors[name] = { dtype: 'I32', shape: [data.length], data };
  };
  const manifest: Record<string, unknown> = {
    format: PET_FORMAT_NAME,
    version: PET_FORMAT_VERSION,
    kind: bundle.pet.kind,
    base_model: {
      hidden_size: baseConfig.hiddenSize,
      num_hidden_layers: baseConfig.numHiddenLayers,
      intermediate_size: baseConfig.intermediateSize,
    },
  };

  const out: BundleWriteContext = { config: baseConfig, source: bundle.source, f32, i32 };
  const section = petKindModule(bundle.pet.kind)!.writeBundle(bundle.pet, out);
  if (section !== undefined) manifest[bundle.pet.kind] = section;
  if (bundle.head) {
    const rows = bundle.head.bias.length;
    f32(CLASSIFIER_WEIGHT, bundle.head.weight, [rows, baseConfig.hiddenSize]);
    f32(CLASSIFIER_BIAS, bundle.head.bias, [rows]);
    manifest['head'] = { id2label: bundle.head.id2label };
  }

  return writePetFiles(dir, { name: PET_MANIFEST_FILE, json: manifest }, PET_TENSORS_FILE, tensors);
}
