import { PetServeError, type ErrorCode } from '../util/errors.js';

/** Process exit codes by error code: the one place CLI failures are mapped. */
/** Codes without an entry exit with 1 (other failure). */
const EXIT_BY_CODE: Partial<Record<ErrorCode, number>> = {
  INVALID_INPUT: 2,
  USAGE: 2,
  CONFIG_INVALID: 2,
  INIT_MODEL_OPTIONS: 2,
  CHECKPOINT_INVALID: 3,
  SAFETENSORS_FORMAT: 3,
  PET_INVALID: 3,
  GPU_UNAVAILABLE: 4,
  DEVICE_LOST: 5,
  SHADER_INVALID: 6,
};

export function exitCodeFor(err: unknown): number {
  if (err instanceof PetServeError) return EXIT_BY_CODE[err.code] ?? 1;
  return 1;
}

export class UsageError extends PetServeError {
  constructor(message: string) {
    super('USAGE', message);
  }
}
