// The one place where failures become HTTP statuses. Every error that reaches
// a response is a PetServeError with a stable code (or an error of express,
// body-parser or multer, translated here first); routes only throw.

import { MulterError } from 'multer';
import { OverloadError } from '../scheduler/types.js';
import { PetServeError } from '../util/errors.js';

/** The request does not match the route's schema (wrong types, missing or unknown fields). */
export class RequestValidationError extends PetServeError {
  constructor(message: string) {
    super('INVALID_REQUEST', message);
  }
}

/** The body is not valid JSON. */
export class MalformedJsonError extends PetServeError {
  constructor(detail: string) {
    super('MALFORMED_JSON', `request body is not valid JSON: ${detail}`);
  }
}

/** A request body, upload, or a tensor in it, is larger than allowed. */
export class PayloadTooLargeError extends PetServeError {
  constructor(message: string) {
    super('PAYLOAD_TOO_LARGE', message);
  }
}

/** More inputs in one request than server.maxInputsPerRequest. */
export class TooManyInputsError extends PetServeError {
  constructor(field: string, count: number, max: number) {
    super('TOO_MANY_INPUTS', `${field}: ${count} inputs, at most ${max} per request (server.maxInputsPerRequest)`);
  }
}

/** A sequence is longer than the model takes and truncation was not asked for. */
export class SequenceTooLongError extends PetServeError {
  constructor(field: string, length: number, max: number) {
    super('SEQUENCE_TOO_LONG', `${field}: ${length} tokens, the model takes at most ${max}; send options.truncate: true to cut it`);
  }
}

export class UnsupportedMediaTypeError extends PetServeError {
  constructor(message: string) {
    super('UNSUPPORTED_MEDIA_TYPE', message);
  }
}

/** Missing or wrong admin bearer token. */
export class UnauthorizedError extends PetServeError {
  constructor(message: string) {
    super('UNAUTHORIZED', message);
  }
}

/** A feature turned off by configuration (admin routes without a token, path registration without a root). */
export class FeatureDisabledError extends PetServeError {
  constructor(message: string) {
    super('DISABLED', message);
  }
}

export class RouteNotFoundError extends PetServeError {
  constructor(method: string, path: string) {
    super('NOT_FOUND', `no route for ${method} ${path}`);
  }
}

/** Text input sent to a model without a tokenizer. */
export class TextInputUnsupportedError extends PetServeError {
  constructor() {
    super('TEXT_INPUT_UNSUPPORTED', 'this model has no tokenizer.json: send token ids (input_ids) instead of text');
  }
}

/** An uploaded task archive is malformed, unsafe (traversal, links) or too large when unpacked. */
export class ArchiveError extends PetServeError {
  constructor(message: string) {
    super('ARCHIVE_INVALID', message);
  }
}

/** A server-side path given for registration resolves outside server.registerRoot. */
export class PathOutsideRootError extends PetServeError {
  constructor(path: string) {
    super('PATH_OUTSIDE_ROOT', `path '${path}' resolves outside server.registerRoot`);
  }
}

const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  INVALID_REQUEST: 400,
  MALFORMED_JSON: 400,
  UNAUTHORIZED: 401,
  DISABLED: 403,
  NOT_FOUND: 404,
  TASK_NOT_FOUND: 404,
  TASK_EXISTS: 409,
  PAYLOAD_TOO_LARGE: 413,
  TOO_MANY_INPUTS: 413,
  SEQUENCE_TOO_LONG: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  // Well-formed requests whose values the model or the registry cannot take.
  INVALID_INPUT: 422,
  PET_INVALID: 422,
  ARCHIVE_INVALID: 422,
  PATH_OUTSIDE_ROOT: 422,
  TEXT_INPUT_UNSUPPORTED: 422,
  OVERLOADED: 429,
  // Offline batches (src/queue).
  BATCH_NOT_FOUND: 404,
  BATCH_FINISHED: 409,
  IDEMPOTENCY_CONFLICT: 409,
  BATCH_TOO_LARGE: 413,
  REDIS_UNAVAILABLE: 503,
  SHUTTING_DOWN: 503,
  GPU_UNAVAILABLE: 503,
  DEVICE_LOST: 503,
  DEADLINE_EXCEEDED: 504,
};

export interface HttpFailure {
  status: number;
  code: string;
  /** Safe to show the client: internal errors are not described. */
  message: string;
  headers: Record<string, string>;
  /** 5xx from an unexpected error: log it with its stack. */
  unexpected: boolean;
}

/** Errors that express's body parser attaches a `type` to. */
interface BodyParserError {
  type: string;
  status?: number;
  message: string;
}

function isBodyParserError(err: unknown): err is BodyParserError {
  return typeof err === 'object' && err !== null && typeof (err as { type?: unknown }).type === 'string' && 'status' in err;
}

/** Translate foreign errors (body parser, multer) into ours; ours pass through. */
export function normalizeError(err: unknown): unknown {
  if (err instanceof PetServeError) return err;
  if (err instanceof MulterError) {
    if (err.code === 'LIMIT_FILE_SIZE') return new PayloadTooLargeError('uploaded archive is larger than server.maxUploadBytes');
    return new RequestValidationError(`multipart upload: ${err.message}${err.field ? ` (field '${err.field}')` : ''}`);
  }
  if (isBodyParserError(err)) {
    switch (err.type) {
      case 'entity.parse.failed':
        return new MalformedJsonError(err.message);
      case 'entity.too.large':
        return new PayloadTooLargeError('request body is larger than server.maxBodyBytes');
      case 'encoding.unsupported':
      case 'charset.unsupported':
        return new UnsupportedMediaTypeError(err.message);
      case 'request.aborted':
        return new RequestValidationError('request aborted by the client');
      default:
        return new RequestValidationError(err.message);
    }
  }
  return err;
}

/**
 * Status, code and headers of a failure. `protocol: 'v2'`: the Open Inference
 * Protocol has no 422; a request the model cannot take is its generic 400.
 */
export function toHttpFailure(raw: unknown, opts: { protocol?: 'v1' | 'v2' } = {}): HttpFailure {
  const err = normalizeError(raw);
  if (err instanceof PetServeError) {
    const mapped = STATUS_BY_CODE[err.code] ?? 500;
    const status = opts.protocol === 'v2' && mapped === 422 ? 400 : mapped;
    const headers: Record<string, string> = {};
    if (err instanceof OverloadError) headers['Retry-After'] = String(Math.max(1, Math.ceil(err.retryAfterSeconds)));
    if (err.code === 'UNAUTHORIZED') headers['WWW-Authenticate'] = 'Bearer realm="petserve-admin"';
    return { status, code: err.code, message: err.message, headers, unexpected: status === 500 };
  }
  return { status: 500, code: 'INTERNAL', message: 'internal server error', headers: {}, unexpected: true };
}
