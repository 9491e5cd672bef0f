import { PetServeError } from '../util/errors.js';

// Refusals of the gateway's model-dependent checks (mapped to HTTP in server/errors.ts by code).

/** More inputs in one request than server.maxInputsPerRequest. */
export class TooManyInputsError extends PetServeError {
  constructor(field: string, count: number, max: number) {
    super('TOO_MANY_INPUTS', `${field}: ${count} inputs, at most ${max} per request (server.maxInputsPerRequest)`);
  }
}

/** A sequence is longer than the model takes and truncation was not asked for. */
export class SequenceTooLongError extends PetServeError {
  /** `limit`: where `max` comes from (max_position_embeddings, model_max_length). */
  constructor(field: string, length: number, max: number, limit: string) {
    super('SEQUENCE_TOO_LONG', `${field}: ${length} tokens, at most ${max} are taken (${limit}); send options.truncate: true to cut it`);
  }
}

/** Text input sent to a model without a tokenizer. */
export class TextInputUnsupportedError extends PetServeError {
  constructor() {
    super('TEXT_INPUT_UNSUPPORTED', 'this model has no tokenizer.json: send token ids (input_ids) instead of text');
  }
}
