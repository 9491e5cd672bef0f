// Shapes of the PetServe REST API (/v1). The zod schemas validate requests and
// are also the source of the OpenAPI document (openapi.ts), so the two cannot drift.

import { z } from 'zod';

/** Same rule as the task registry (letters, digits, '.', '_', '-'; no leading dot), checked before an id touches a path. */
export const TASK_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const taskIdSchema = z.string().regex(TASK_ID_PATTERN, 'must be 1-128 letters, digits, ".", "_" or "-", not starting with "." "_" or "-"');

const tokenIdRow = z.array(z.number().int().nonnegative()).min(1, 'must hold at least one token id');

export const predictOptionsSchema = z
  .strictObject({
    /** Cut sequences longer than the model takes instead of answering 413. */
    truncate: z.boolean().default(false),
    /** Add the raw logits to each classification answer. */
    return_logits: z.boolean().default(false),
    /** Latency objective for this request; past it the request is answered 504 instead of run. */
    deadline_ms: z.number().int().positive().max(3_600_000).optional(),
  })
  .prefault({});

export const predictRequestSchema = z
  .strictObject({
    inputs: z
      .union([z.string().min(1, 'must not be empty'), z.array(z.string().min(1, 'must not be empty')).min(1, 'must hold at least one text')])
      .optional()
      .describe('one text or a list of texts (tokenized with the model tokenizer)'),
    input_ids: z.array(tokenIdRow).min(1, 'must hold at least one sequence').optional().describe('token ids, one row per sequence (rows may differ in length)'),
    token_type_ids: z.array(tokenIdRow).optional().describe('segment ids, same shape as input_ids'),
    options: predictOptionsSchema,
  })
  .superRefine((body, ctx) => {
    if ((body.inputs === undefined) === (body.input_ids === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['inputs'], message: 'give exactly one of "inputs" (text) or "input_ids" (token ids)' });
    }
    if (body.token_type_ids !== undefined) {
      if (body.input_ids === undefined) {
        ctx.addIssue({ code: 'custom', path: ['token_type_ids'], message: 'only allowed with "input_ids"' });
      } else if (
        body.token_type_ids.length !== body.input_ids.length ||
        body.token_type_ids.some((row, i) => row.length !== body.input_ids![i]!.length)
      ) {
        ctx.addIssue({ code: 'custom', path: ['token_type_ids'], message: 'must have the same shape as input_ids' });
      }
    }
  });

export type PredictRequest = z.infer<typeof predictRequestSchema>;
export type PredictOptions = z.infer<typeof predictOptionsSchema>;

import type { ClassificationOutput, EmbeddingOutput } from '../../gateway/outputs.js';
export type { ClassificationOutput, EmbeddingOutput };

export interface PredictResponse {
  task: string;
  kind: string;
  outputs: (ClassificationOutput | EmbeddingOutput)[];
}

/** Registration from a server-side path (JSON body of POST /v1/tasks). */
/** The base model a registration is for (absent: the encoder base). */
export const registerModelSchema = taskIdSchema.describe(
  "the base model the PET is for: the encoder's id (the default) or, with a decoder served, the decoder's id (a PEFT adapter for it)",
);

export const registerPathSchema = z.strictObject({
  id: taskIdSchema,
  path: z.string().min(1).describe('PET directory on the server, relative to or inside server.registerRoot'),
  model: registerModelSchema.optional(),
});

export interface TaskCounters {
  /** HTTP requests answered for the task (predict + V2 infer). */
  requests: number;
  /** Sequences in them. */
  inputs: number;
  /** Requests answered with an error. */
  errors: number;
  lastRequestAt: string | null;
}

export interface TaskSummary {
  id: string;
  /** The base model it runs on (encoder or decoder id). */
  model: string;
  kind: string;
  format: string;
  type: 'classification' | 'embedding' | 'generation';
  labels: string[];
  /** PET tensors on the host (f32). */
  sizeBytes: number;
  /** Bytes in the GPU pool when resident. */
  gpuBytes: number;
  resident: boolean;
  registeredAt: string;
  requests: TaskCounters;
}

export interface ErrorBody {
  error: { code: string; message: string };
}
