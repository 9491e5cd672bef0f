// Module-name matching as Hugging Face PEFT does it, so a configuration
// selects the same modules here as in PEFT:
//  - target_modules / exclude_modules as a list: a module matches an entry t
//    when its name is t or ends with "." + t; as a string: a regex that must
//    match the whole name (re.fullmatch).
//  - layers_to_transform only filters list matches (peft check_target_module_exists).
//  - rank_pattern / alpha_pattern keys: the first key k (in order) for which
//    re.match(r"(.*\.)?(k)$", name) matches (peft get_pattern_key).
//  - IA³ feedforward_modules as a list: plain name.endswith(t), no dot (peft
//    IA3Model._check_target_module_feedforward), so "output.dense" also
//    selects "attention.output.dense".

import { PetFormatError } from '../../util/errors.js';

export type ModuleSelector = string | readonly string[];

// PEFT's patterns are Python regexes; the subset configs use (., *, +, ?, |,
// groups, classes, \d) reads the same in JavaScript. No 'u' flag: it rejects
// escapes like \- that Python accepts.
function compile(pattern: string, wrap: (p: string) => string, what: string): RegExp {
  try {
    return new RegExp(wrap(pattern));
  } catch (err) {
    throw new PetFormatError(`${what}: ${JSON.stringify(pattern)} is not a valid regular expression (${(err as Error).message})`);
  }
}

export function fullMatch(pattern: string, name: string, what: string): boolean {
  return compile(pattern, (p) => `^(?:${p})$`, what).test(name);
}

export function matchesModuleList(entries: readonly string[], name: string): boolean {
  return entries.some((t) => name === t || name.endsWith(`.${t}`));
}

export interface TargetSpec {
  targetModules: ModuleSelector;
  excludeModules?: ModuleSelector | null;
  layersToTransform?: number | readonly number[] | null;
  layersPattern?: string | readonly string[] | null;
  /** Prefix of error messages (the config file). */
  source?: string;
}

/** Does PEFT put an adapter on module `name`? */
export function isTargetModule(spec: TargetSpec, name: string): boolean {
  const where = spec.source === undefined ? '' : `${spec.source}: `;
  const exclude = spec.excludeModules;
  if (exclude !== undefined && exclude !== null) {
    const excluded = typeof exclude === 'string' ? fullMatch(exclude, name, `${where}exclude_modules`) : matchesModuleList(exclude, name);
    if (excluded) return false;
  }
  const target = spec.targetModules;
  if (typeof target === 'string') return fullMatch(target, name, `${where}target_modules`);
  if (target.includes(name)) return true;
  if (!target.some((t) => name.endsWith(`.${t}`))) return false;

  const layers = spec.layersToTransform;
  const usesLayers = layers !== undefined && layers !== null && (typeof layers === 'number' || layers.length > 0);
  if (!usesLayers) return true;
  const layer = layerIndexOf(name, spec.layersPattern ?? null, `${where}layers_pattern`);
  if (layer === null) return false;
  return typeof layers === 'number' ? layer === layers : layers.includes(layer);
}

function layerIndexOf(name: string, layersPattern: string | readonly string[] | null, what: string): number | null {
  const patterns = layersPattern === null ? [] : typeof layersPattern === 'string' ? [layersPattern] : layersPattern;
  // re.match anchors at the start only; the trailing "\." needs no end anchor.
  const regexes =
    patterns.length === 0
      ? [/^.*\.[^.]*\.(\d+)\./]
      : patterns.map((p) => compile(p, (q) => `^.*\\.${q}\\.(\\d+)\\.`, what));
  for (const re of regexes) {
    const m = re.exec(name);
    if (m) return Number(m[1]);
  }
  return null;
}

/** The rank_pattern / alpha_pattern key that applies to `name`, or undefined. */
export function patternKeyFor(pattern: Readonly<Record<string, unknown>>, name: string, what: string): string | undefined {
  for (const key of Object.keys(pattern)) {
    if (key === name || compile(key, (k) => `^(?:.*\\.)?(?:${k})$`, what).test(name)) return key;
  }
  return undefined;
}

/** IA³ feedforward_modules: is the module's input (rather than its output) scaled? */
export function isFeedforwardModule(feedforward: ModuleSelector | null | undefined, name: string, what = 'feedforward_modules'): boolean {
  if (feedforward === null || feedforward === undefined) return false;
  if (typeof feedforward === 'string') return fullMatch(feedforward, name, what);
  return feedforward.some((t) => name.endsWith(t));
}
