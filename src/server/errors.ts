// The one place where failures become HTTP statuses. Every error that reaches
// a response is a PetServeError with a stable code (or an error of express,
// body-parser or multer, translated here first); routes only throw.

import { MulterError } from 'multer';
import { OverloadError } from '../scheduler/types.js';
import { PetServeError, type ErrorCode } from '../util/errors.js';
import { jsonSyntaxWhere } from '../util/json-syntax.js';

/** The request does not match the route's schema (wrong types, missing or unknown fields). */
export class RequestValidationError extends PetServeError {
  constructor(
    message: string,
    /** The first offending field as a client writes it (`input[0]`), when known: OpenAI's `param`. */
    readonly param: string | null = null,
  ) {
    super('INVALID_REQUEST', message);
  }
}

/** The body is not valid JSON. The message gives a position only: parser messages quote the body. */
export class MalformedJsonError extends PetServeError {
  constructor(parserMessage: string) {
    super('MALFORMED_JSON', `request body is not valid JSON (${jsonSyntaxWhere(parserMessage)})`);
  }
}

/** A multipart/form-data body that cannot be read (truncated, garbled, wrong or missing boundary). */
export class MalformedMultipartError extends PetServeError {
  constructor() {
    super('MALFORMED_MULTIPART', 'multipart/form-data body cannot be read: it is truncated, malformed or its boundary does not match the Content-Type');
  }
}

/** The client closed the connection before its request body arrived (nobody reads the answer; logged at info). */
export class ClientAbortedError extends PetServeError {
  constructor() {
    super('CLIENT_ABORTED', 'the client closed the connection before the request body was complete');
  }
}

/** The request body (or headers) did not arrive within server.requestTimeoutMs (server.headersTimeoutMs). */
export class RequestTimeoutError extends PetServeError {
  constructor(message: string) {
    super('REQUEST_TIMEOUT', message);
  }
}

/** A browser request from an origin not in server.corsOrigins, on a route with side effects. */
export class OriginForbiddenError extends PetServeError {
  constructor() {
    super('ORIGIN_FORBIDDEN', 'requests from this Origin are refused on routes with side effects (server.corsOrigins)');
  }
}

/** A request body, upload, or a tensor in it, is larger than allowed. */
export class PayloadTooLargeError extends PetServeError {
  constructor(message: string) {
    super('PAYLOAD_TOO_LARGE', message);
  }
}

export class UnsupportedMediaTypeError extends PetServeError {
  constructor(message: string) {
    super('UNSUPPORTED_MEDIA_TYPE', message);
  }
}

/** Missing or wrong bearer token (admin token or API key; `realm` says which). */
export class UnauthorizedError extends PetServeError {
  constructor(
    message: string,
    readonly realm: 'petserve-admin' | 'petserve' = 'petserve-admin',
  ) {
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

/** An uploaded task archive is malformed, unsafe (traversal, links) or too large when unpacked. */
export class ArchiveError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ARCHIVE_INVALID', message, options);
  }
}

/** A server-side path given for registration resolves outside server.registerRoot. */
export class PathOutsideRootError extends PetServeError {
  constructor() {
    super('PATH_OUTSIDE_ROOT', 'the path resolves outside server.registerRoot');
  }
}

/**
 * HTTP status of every error code. Exhaustive over ErrorCode: a new code that is
 * not given a status here does not compile (it would otherwise become a 500).
 */
const STATUS_BY_CODE: Readonly<Record<ErrorCode, number>> = {
  INVALID_REQUEST: 400,
  MALFORMED_JSON: 400,
  MALFORMED_MULTIPART: 400,
  CLIENT_ABORTED: 400,
  UNAUTHORIZED: 401,
  DISABLED: 403,
  ORIGIN_FORBIDDEN: 403,
  REQUEST_TIMEOUT: 408,
  NOT_FOUND: 404,
  TASK_NOT_FOUND: 404,
  TASK_EXISTS: 409,
  BASE_MODEL: 409,
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
  // Generation: OpenAI answers these with 404 / 400 (vLLM too), and the SDKs expect them.
  MODEL_NOT_FOUND: 404,
  CONTEXT_LENGTH_EXCEEDED: 400,
  CHAT_TEMPLATE_FAILED: 400,
  OVERLOADED: 429,
  DEADLINE_UNREACHABLE: 429,
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
  CATALOG_UNAVAILABLE: 503,
  POOL_EXHAUSTED: 503,
  // Failures of a model or PET the server loads itself, or of the CLI alone: a
  // request never causes them, so reaching a client means a server fault.
  USAGE: 500,
  CONFIG_INVALID: 500,
  INIT_MODEL_OPTIONS: 500,
  CHECKPOINT_INVALID: 500,
  SAFETENSORS_FORMAT: 500,
  SAFETENSORS_WRITE: 500,
  TENSOR_NOT_FOUND: 500,
  TENSOR_CONVERSION: 500,
  SHADER_INVALID: 500,
  SERVER_UNREACHABLE: 500,
  SERVER_ERROR: 500,
  // A queue chunk's transient fault, retried by the worker: never an HTTP answer.
  CHUNK_RETRY: 503,
  // A worker without a decoder met a chat/completions line: retried, written only on a result line.
  GENERATION_UNAVAILABLE: 503,
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

/** A request stream that failed because the client went away (ECONNRESET / 'aborted'). */
export function isClientAbort(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; message?: unknown };
  return e.code === 'ECONNRESET' || e.code === 'ERR_STREAM_PREMATURE_CLOSE' || e.message === 'aborted';
}

/** Translate foreign errors (body parser, multer) into ours; ours pass through. */
export function normalizeError(err: unknown): unknown {
  if (err instanceof PetServeError) return err;
  if (isClientAbort(err)) return new ClientAbortedError();
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
        return new ClientAbortedError();
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
    // The step scheduler's refusal carries no estimate: a step frees sequences within about a second.
    else if (err.code === 'OVERLOADED') headers['Retry-After'] = '1';
    if (err instanceof UnauthorizedError) headers['WWW-Authenticate'] = `Bearer realm="${err.realm}"`;
    if (err.code === 'SHUTTING_DOWN') headers['Retry-After'] = '5';
    return { status, code: err.code, message: err.message, headers, unexpected: status === 500 };
  }
  return { status: 500, code: 'INTERNAL', message: 'internal server error', headers: {}, unexpected: true };
}
