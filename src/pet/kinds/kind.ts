// What a PET kind is: one module (kinds/<kind>.ts) that knows its spec and
// nothing else knows. The table of kinds is kinds/index.ts; the format
// readers, the validator, the packer, the generator and the registry only
// dispatch through it. How to add a kind: docs/architecture.md.

import type { z } from 'zod';

import type { BertConfig } from '../../model/bert-config.js';
import type { BertCheckpoint } from '../../model/checkpoint.js';
import type { Rng } from '../../util/random.js';
import type { PetTensorFile } from '../formats/common.js';
import type { PetPacker } from '../packed-pet.js';
import type { Validator } from '../validator.js';

/** init-pet options a kind may take (each kind lists the ones it does). */
export interface KindInitOptions {
  /** LoRA rank. */
  rank?: number | undefined;
  /** Fraction of each weight a sparse kind touches. */
  density?: number | undefined;
  /** Adapter bottleneck. */
  bottleneck?: number | undefined;
}
export type InitOption = keyof KindInitOptions;
export const INIT_OPTIONS: readonly InitOption[] = ['rank', 'density', 'bottleneck'];

/** What a kind reads its spec from in a PetServe bundle. */
export interface BundleReadContext<Section> {
  /** The kind's own pet.json section (already checked by its schema), undefined when absent. */
  section: Section | undefined;
  /** pet.safetensors; every tensor a kind does not read is refused as not understood. */
  file: PetTensorFile;
  base: BertCheckpoint;
  /** pet.json as messages name it. */
  manifestPath: string;
}

/** Where a kind writes its tensors in a PetServe bundle (F32 values, I32 indices). */
export interface BundleWriteContext {
  config: BertConfig;
  /** What the bundle was built from, for messages. */
  source: string;
  f32(name: string, data: Float32Array, shape: number[]): void;
  i32(name: string, data: Int32Array): void;
}

export interface GenerateContext {
  model: BertCheckpoint;
  rng: Rng;
  options: KindInitOptions;
}

/**
 * One PET kind. `S` is its spec (`{ kind, ... }`, the host form every format
 * reader produces), `Section` its pet.json section.
 */
export interface PetKindModule<S extends { kind: string }, Section = never> {
  readonly kind: S['kind'];
  /** One line on what it computes (CLI help, docs). */
  readonly summary: string;
  /** Its pet.json section, named after the kind; null when it has none. `required`: a bundle without it is refused. */
  readonly section: { schema: z.ZodType<Section>; required: boolean } | null;
  /** How init-pet writes it: as a Hugging Face PEFT directory (with these target modules) or a PetServe bundle. */
  readonly initFormat: { format: 'bundle' } | { format: 'peft'; targetModules: readonly string[]; feedforwardModules?: readonly string[] };
  /** init-pet options it takes, each with its help text (meaning and default) for this kind. */
  readonly initOptions: Readonly<Partial<Record<InitOption, string>>>;

  /** pet.json section + pet.safetensors → spec. Shapes are checked as read; the rest by `validate`. */
  readBundle(ctx: BundleReadContext<Section>): S;
  /** Spec → tensors (through ctx) and its pet.json section (undefined: none). */
  writeBundle(spec: S, ctx: BundleWriteContext): Section | undefined;
  /** Every check against the base config (docs/pet-format.md); fails through `v`. */
  validate(spec: S, v: Validator): void;
  /** Spec → tensors + attachments (the only thing the engine sees). */
  pack(spec: S, p: PetPacker): void;
  /** A random spec whose delta moves the logits visibly (deterministic by ctx.rng). */
  generate(ctx: GenerateContext): S;
  /** Refusal of an out-of-range init option (only its own options are set), or null. */
  checkInitOptions(options: KindInitOptions, config: BertConfig): string | null;
  /** Its host tensors (f32 values, i32 indices), for the host-memory count. */
  tensors(spec: S): ArrayBufferView[];
}
