// Open Inference Protocol (KServe V2) REST shapes, each task served as a model.
// https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol

import { z } from 'zod';

export const V2_DATATYPES = ['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES'] as const;
export type V2Datatype = (typeof V2_DATATYPES)[number];

/** Tensor data: row-major, flat or nested arrays (the protocol allows both). */
type TensorData = (number | string | boolean | TensorData)[];
const tensorData: z.ZodType<TensorData> = z.lazy(() => z.array(z.union([z.number(), z.string(), z.boolean(), tensorData])));

const parameters = z.record(z.string(), z.unknown());

export const v2RequestInputSchema = z.object({
  name: z.string().min(1),
  shape: z.array(z.number().int().nonnegative()),
  datatype: z.enum(V2_DATATYPES),
  parameters: parameters.optional(),
  data: tensorData,
});

export const v2InferRequestSchema = z.object({
  id: z.string().optional(),
  parameters: z
    .object({
      /** PetServe extensions, same meaning as in /v1 predict options. */
      truncate: z.boolean().optional(),
      deadline_ms: z.number().int().positive().max(3_600_000).optional(),
    })
    .catchall(z.unknown())
    .optional(),
  inputs: z.array(v2RequestInputSchema).min(1, 'must hold at least one input tensor'),
  outputs: z.array(z.object({ name: z.string().min(1), parameters: parameters.optional() })).optional(),
});

export type V2RequestInput = z.infer<typeof v2RequestInputSchema>;
export type V2InferRequest = z.infer<typeof v2InferRequestSchema>;

export interface V2MetadataTensor {
  name: string;
  datatype: V2Datatype;
  /** -1 marks a variable dimension. */
  shape: number[];
}

export interface V2ModelMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: V2MetadataTensor[];
  outputs: V2MetadataTensor[];
  parameters?: Record<string, unknown>;
}

export interface V2ResponseOutput {
  name: string;
  shape: number[];
  datatype: V2Datatype;
  data: number[] | string[];
}

export interface V2InferResponse {
  model_name: string;
  model_version?: string;
  id?: string;
  outputs: V2ResponseOutput[];
}

export interface V2ErrorBody {
  error: string;
}

/** Tensor names this server takes and gives. */
export const V2_INPUT = { inputIds: 'input_ids', tokenTypeIds: 'token_type_ids', attentionMask: 'attention_mask', text: 'text' } as const;
export const V2_OUTPUT = { logits: 'logits', probabilities: 'probabilities', pooled: 'pooler_output' } as const;
