// One entry point for every PET directory: tells a PetServe bundle from a
// Hugging Face PEFT directory by its manifest file and hands it to that importer.

import { stat } from 'node:fs/promises';
import { join } from 'node:path';

import type { BertCheckpoint } from '../../model/checkpoint.js';
import { PetFormatError } from '../../util/errors.js';
import type { PetBundle } from '../types.js';
import { PET_MANIFEST_FILE, loadPetBundle } from './bundle.js';
import { pathExists } from './common.js';
import { PEFT_CONFIG_FILE, loadPeftDirectory } from './peft.js';

export type PetDirectoryFormat = PetBundle['format'];

/**
 * Which format a directory holds; refuses a path that is not a directory, or
 * holds neither or both manifests. Messages do not repeat `dir` (the caller
 * knows it; a server's task directories are nobody's business).
 */
export async function detectPetFormat(dir: string): Promise<PetDirectoryFormat> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(dir)).isDirectory();
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new PetFormatError(`cannot read PET directory (${reason})`, { cause: err });
  }
  if (!isDirectory) {
    throw new PetFormatError(`not a directory (a PET is a directory: pet.json + pet.safetensors, or a PEFT adapter)`);
  }
  const bundle = await pathExists(join(dir, PET_MANIFEST_FILE));
  const peft = await pathExists(join(dir, PEFT_CONFIG_FILE));
  if (bundle && peft) {
    throw new PetFormatError(`the PET directory holds both ${PET_MANIFEST_FILE} and ${PEFT_CONFIG_FILE}; a PET directory holds one format`);
  }
  if (bundle) return 'bundle';
  if (peft) return 'peft';
  throw new PetFormatError(
    `not a PET directory: neither ${PET_MANIFEST_FILE} (PetServe bundle) nor ${PEFT_CONFIG_FILE} (Hugging Face PEFT) found`,
  );
}

/** Load, check against the base model, and validate the PET in `dir`, whichever format it holds. */
export async function loadPetDirectory(dir: string, base: BertCheckpoint): Promise<PetBundle> {
  return (await detectPetFormat(dir)) === 'bundle' ? loadPetBundle(dir, base) : loadPeftDirectory(dir, base);
}
