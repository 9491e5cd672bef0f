// Dawn toggles: switches of the WebGPU implementation itself (robustness,
// validation, zero-initialisation), passed to the npm `webgpu` package's
// create() as `enable-dawn-features=a,b` / `disable-dawn-features=c`. The
// accepted names and why each exists: KNOWN_DAWN_TOGGLES in src/config/config.ts.
// Measured effect and the decision: docs/operating.md "Dawn toggles".

import type { PetServeConfig } from '../config/config.js';

export type DawnToggles = PetServeConfig['gpu']['dawnToggles'];

export const NO_DAWN_TOGGLES: DawnToggles = { enable: [], disable: [] };

/**
 * The create() flags for `toggles`. One flag per direction: dawn.node keeps
 * only the last `enable-dawn-features=` it is given, so a second one would
 * silently drop the first (seen with dump_shaders + disable_robustness).
 */
export function dawnToggleFlags(toggles: DawnToggles): string[] {
  const flags: string[] = [];
  if (toggles.enable.length > 0) flags.push(`enable-dawn-features=${toggles.enable.join(',')}`);
  if (toggles.disable.length > 0) flags.push(`disable-dawn-features=${toggles.disable.join(',')}`);
  return flags;
}

/** 'enable: a, b; disable: c', or 'none': for logs and benchmark reports. */
export function describeDawnToggles(toggles: DawnToggles): string {
  const parts = [
    ...(toggles.enable.length > 0 ? [`enable: ${toggles.enable.join(', ')}`] : []),
    ...(toggles.disable.length > 0 ? [`disable: ${toggles.disable.join(', ')}`] : []),
  ];
  return parts.length > 0 ? parts.join('; ') : 'none';
}
