/**
 * Typed errors. Every failure a user can cause or meet has its own class and a
 * stable `code` from the closed list below; the CLI (src/cli/exit-codes.ts) and
 * the HTTP layer (src/server/errors.ts) map codes to exit codes / statuses in
 * one place each, and the compiler refuses a map that misses a code.
 */
export const ERROR_CODES = [
  // Input and configuration
  'INVALID_INPUT',
  'INVALID_REQUEST',
  'USAGE',
  'CONFIG_INVALID',
  'INIT_MODEL_OPTIONS',
  'MALFORMED_JSON',
  'MALFORMED_MULTIPART',
  'CLIENT_ABORTED',
  'REQUEST_TIMEOUT',
  'PAYLOAD_TOO_LARGE',
  'TOO_MANY_INPUTS',
  'SEQUENCE_TOO_LONG',
  'TEXT_INPUT_UNSUPPORTED',
  'UNSUPPORTED_MEDIA_TYPE',
  'UNAUTHORIZED',
  'ORIGIN_FORBIDDEN',
  'DISABLED',
  'NOT_FOUND',
  'PATH_OUTSIDE_ROOT',
  // Models, PETs and tasks
  'CHECKPOINT_INVALID',
  'SAFETENSORS_FORMAT',
  'SAFETENSORS_WRITE',
  'TENSOR_NOT_FOUND',
  'TENSOR_CONVERSION',
  'PET_INVALID',
  'ARCHIVE_INVALID',
  'TASK_NOT_FOUND',
  'TASK_EXISTS',
  'BASE_MODEL',
  'POOL_EXHAUSTED',
  // Generation (OpenAI-compatible routes)
  'MODEL_NOT_FOUND',
  'CONTEXT_LENGTH_EXCEEDED',
  'CHAT_TEMPLATE_FAILED',
  // Capacity and time
  'OVERLOADED',
  'DEADLINE_UNREACHABLE',
  'DEADLINE_EXCEEDED',
  'SHUTTING_DOWN',
  // Device
  'GPU_UNAVAILABLE',
  'DEVICE_LOST',
  'SHADER_INVALID',
  // Offline batches, the shared catalog, the CLI's HTTP client
  'BATCH_NOT_FOUND',
  'BATCH_FINISHED',
  'BATCH_TOO_LARGE',
  'IDEMPOTENCY_CONFLICT',
  'REDIS_UNAVAILABLE',
  'CATALOG_UNAVAILABLE',
  'SERVER_UNREACHABLE',
  'SERVER_ERROR',
  'CHUNK_RETRY',
  'GENERATION_UNAVAILABLE',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Whether `code` (e.g. read from a server's error body) is one of ours. */
export function isErrorCode(code: string): code is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(code);
}

export class PetServeError extends Error {
  constructor(
    readonly code: ErrorCode,
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
