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

/** A `model` that is neither the decoder base nor one of its tasks. */
export class UnknownModelError extends PetServeError {
  readonly param = 'model';
  constructor(model: string) {
    super('MODEL_NOT_FOUND', `model '${model.slice(0, 128)}' does not exist (GET /v1/models lists the models served)`);
  }
}

/** A `model` that exists but cannot do what was asked (an encoder task on a generation route). */
export class ModelKindError extends PetServeError {
  readonly param = 'model';
  constructor(message: string) {
    super('INVALID_INPUT', message);
  }
}

/** Prompt + max_tokens longer than the decoder's context. `param`: the field holding the prompt. */
export class ContextLengthError extends PetServeError {
  constructor(
    readonly param: string,
    promptTokens: number,
    maxTokens: number,
    context: number,
  ) {
    super(
      'CONTEXT_LENGTH_EXCEEDED',
      `this model's context is ${context} tokens; the prompt (${param}) holds ${promptTokens} tokens and max_tokens asks for ${maxTokens} more: shorten the prompt or lower max_tokens`,
    );
  }
}

/** A prompt token id outside the vocabulary. */
export class TokenIdError extends PetServeError {
  constructor(
    readonly param: string,
    vocabSize: number,
  ) {
    super('INVALID_INPUT', `${param}: every token id must be an integer in [0, ${vocabSize})`);
  }
}

/** A request field the gateway's OpenAI checks refuse (a sampling value out of range, an unsupported option); `param` names it. */
export class InvalidParamError extends PetServeError {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super('INVALID_REQUEST', message);
  }
}
