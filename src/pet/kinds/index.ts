// The one table of PET kinds. Every kind list in PetServe derives from it:
// PetKind / PetSpec, PET_KINDS (metrics labels, CLI help, OpenAPI), the
// pet.json schema (kind enum and sections), init-pet's options.
// Adding a kind: docs/architecture.md, "How to add a PET kind".

import { adapter } from './adapter.js';
import { bitfit } from './bitfit.js';
import { diff } from './diff.js';
import { ia3 } from './ia3.js';
import type { InitOption, PetKindModule } from './kind.js';
import { lora } from './lora.js';
import { mask } from './mask.js';

/** In this order everywhere kinds are listed. */
const MODULES = [lora, adapter, diff, mask, bitfit, ia3] as const;

type SpecOf<M> = M extends PetKindModule<infer S, infer _Section> ? S : never;

/** A PET's host form: one member per kind, discriminated by `kind`. */
export type PetSpec = SpecOf<(typeof MODULES)[number]>;
export type PetKind = PetSpec['kind'];

export const PET_KINDS: readonly PetKind[] = MODULES.map((m) => m.kind);

/** Any kind module, with its spec and section types erased (dispatch by `kind` keeps them matched). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyPetKindModule = PetKindModule<PetSpec, any>;

const BY_KIND = new Map<string, AnyPetKindModule>(MODULES.map((m) => [m.kind, m as unknown as AnyPetKindModule]));

export function isPetKind(kind: unknown): kind is PetKind {
  return typeof kind === 'string' && BY_KIND.has(kind);
}

/** The module of `kind`; undefined for a string that is no PET kind. */
export function petKindModule(kind: string): AnyPetKindModule | undefined {
  return BY_KIND.get(kind);
}

/** Every kind module, in PET_KINDS order. */
export function petKindModules(): readonly AnyPetKindModule[] {
  return [...BY_KIND.values()];
}

/** CLI help of an init-pet option: "kind: meaning (default); kind: ..." over the kinds that take it. */
export function initOptionHelp(option: InitOption): string {
  return petKindModules()
    .flatMap((m) => (m.initOptions[option] === undefined ? [] : [`${m.kind}: ${m.initOptions[option]}`]))
    .join('; ');
}

/** Kinds init-pet writes as Hugging Face PEFT directories (the others as PetServe bundles). */
export function peftInitKinds(): PetKind[] {
  return petKindModules().flatMap((m) => (m.initFormat.format === 'peft' ? [m.kind] : []));
}

export type { AdapterSite, AdapterSpec } from './adapter.js';
export type { BitfitParams, BitfitSpec } from './bitfit.js';
export type { DiffSite, DiffSpec } from './diff.js';
export type { Ia3Site, Ia3Spec } from './ia3.js';
export type { LoraSite, LoraSpec } from './lora.js';
export type { MaskSite, MaskSpec } from './mask.js';
