/**
 * Typed errors. Every failure a user can cause or meet has its own class and a
 * stable `code`. Codes are mapped in one place each: to HTTP status in
 * src/server/errors.ts, to process exit codes in src/cli/exit-codes.ts.
 */
export class PetServeError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** No WebGPU adapter/device could be obtained (missing driver, wrong adapter filter). */
export class GpuUnavailableError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('GPU_UNAVAILABLE', message, options);
  }
}

/** The device was lost while work was in flight and could not be recovered. */
export class DeviceLostError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DEVICE_LOST', message, options);
  }
}

/** A checkpoint directory is missing files, tensors, or has tensors of the wrong shape. */
export class CheckpointError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CHECKPOINT_INVALID', message, options);
  }
}

/** Caller input (token ids, options, CLI arguments) is invalid. */
export class InvalidInputError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_INPUT', message, options);
  }
}

/** Configuration file or environment is invalid. */
export class ConfigError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONFIG_INVALID', message, options);
  }
}

/** A WGSL template could not be specialised or compiled. */
export class ShaderError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SHADER_INVALID', message, options);
  }
}

/** A PET directory (PEFT or PetServe bundle) is malformed, unsupported, or does not fit the base model. */
export class PetFormatError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PET_INVALID', message, options);
  }
}
