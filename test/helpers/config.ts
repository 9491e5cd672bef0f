import { loadConfig, type LoadConfigOptions, type PetServeConfig } from '../../src/config/config.js';

/**
 * loadConfig with f32 storage unless the test says otherwise: tests compare with the float64 reference
 * at f32 tolerances, and the default model.dtype 'auto' lets a start-up timing probe pick f16.
 */
export function f32Config(opts: LoadConfigOptions = {}): PetServeConfig {
  return loadConfig({ ...opts, overrides: { 'model.dtype': 'f32', ...opts.overrides } });
}
