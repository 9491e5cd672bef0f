// The OpenAPI 3.1 document served at GET /openapi.json. Request bodies are
// generated from the same zod schemas that validate them; responses are
// written out here beside the protocol types they describe.

import { z } from 'zod';
import { PET_KINDS } from '../pet/kinds/index.js';
import { predictRequestSchema, registerPathSchema } from './protocol/v1.js';
import { v2InferRequestSchema } from './protocol/v2.js';
import { SERVER_VERSION } from './version.js';

type Json = Record<string, unknown>;

/**
 * A zod schema as an OpenAPI component. zod emits a standalone JSON Schema
 * whose recursive parts live in `$defs` (referenced as `#/$defs/...`); inside
 * the OpenAPI document those must become components of their own.
 */
function component(name: string, schema: z.ZodType, components: Record<string, Json>): Json {
  const raw = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Json;
  const defs = (raw['$defs'] ?? {}) as Record<string, Json>;
  delete raw['$defs'];
  delete raw['$schema'];
  const rename = (s: Json): Json => JSON.parse(JSON.stringify(s).replaceAll('"#/$defs/', `"#/components/schemas/${name}_`)) as Json;
  for (const [def, body] of Object.entries(defs)) components[`${name}_${def}`] = rename(body);
  components[name] = rename(raw);
  return { $ref: `#/components/schemas/${name}` };
}

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const jsonContent = (schema: Json): Json => ({ 'application/json': { schema } });
const response = (description: string, schema?: Json, headers?: Json): Json => ({
  description,
  ...(schema ? { content: jsonContent(schema) } : {}),
  ...(headers ? { headers } : {}),
});

const ERROR_V1 = response('error', ref('Error'));
const ERROR_V2 = response('error (Open Inference Protocol shape)', ref('V2Error'));
const TASK_PARAM = { name: 'task', in: 'path', required: true, schema: { type: 'string' }, description: 'task id' };
/** Data-plane routes also answer for the base model itself, with its own classifier head (config model.id). */
const MODEL_PARAM = { ...TASK_PARAM, description: "task id, or the base model's id (model.id)" };
const ADMIN = [{ adminToken: [] }];
/** Data-plane routes: a Bearer API key when server.apiKeys is set (open without keys). */
export const API_KEY = [{ apiKey: [] }];

function v1Errors(...statuses: number[]): Json {
  const out: Json = {};
  for (const s of statuses) {
    out[String(s)] =
      s === 429
        ? response('queue full; retry after the given seconds', ref('Error'), { 'Retry-After': { schema: { type: 'integer' } } })
        : ERROR_V1;
  }
  return out;
}

function v2Errors(...statuses: number[]): Json {
  return Object.fromEntries(statuses.map((s) => [String(s), ERROR_V2]));
}

export function buildOpenApiDocument(): Json {
  const schemas: Record<string, Json> = {
    Error: {
      type: 'object',
      required: ['error'],
      properties: {
        error: {
          type: 'object',
          required: ['code', 'message'],
          properties: { code: { type: 'string', examples: ['INVALID_REQUEST', 'TASK_NOT_FOUND', 'OVERLOADED'] }, message: { type: 'string' } },
        },
      },
    },
    V2Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
    ClassificationOutput: {
      type: 'object',
      required: ['label', 'score', 'scores'],
      properties: {
        label: { type: 'string', description: "argmax label (the task's id2label)" },
        score: { type: 'number', description: 'probability of the label (softmax over the logits)' },
        scores: { type: 'object', additionalProperties: { type: 'number' }, description: 'probability of every label' },
        logits: { type: 'array', items: { type: 'number' }, description: 'raw logits (options.return_logits)' },
      },
    },
    EmbeddingOutput: {
      type: 'object',
      required: ['embedding'],
      properties: { embedding: { type: 'array', items: { type: 'number' }, description: 'pooled [CLS] output (hidden size)' } },
    },
    PredictResponse: {
      type: 'object',
      required: ['task', 'kind', 'outputs'],
      properties: {
        task: { type: 'string' },
        kind: { type: 'string', enum: [...PET_KINDS, 'base'], description: "the task's PET kind; 'base' for the base model" },
        outputs: { type: 'array', items: { oneOf: [ref('ClassificationOutput'), ref('EmbeddingOutput')] }, description: 'one per input, in order' },
      },
    },
    TaskSummary: {
      type: 'object',
      required: ['id', 'model', 'kind', 'format', 'type', 'labels', 'sizeBytes', 'gpuBytes', 'resident', 'registeredAt', 'requests'],
      properties: {
        id: { type: 'string' },
        model: { type: 'string', description: 'the base model it runs on: the encoder (model.id) or the decoder (generation.modelId)' },
        kind: { type: 'string' },
        format: { type: 'string', enum: ['peft', 'bundle'] },
        type: { type: 'string', enum: ['classification', 'embedding', 'generation'], description: "'generation': an adapter of the decoder (chat/completions)" },
        labels: { type: 'array', items: { type: 'string' } },
        sizeBytes: { type: 'integer', description: 'PET tensors on the host (f32)' },
        gpuBytes: { type: 'integer', description: 'bytes in the GPU pool when resident' },
        resident: { type: 'boolean', description: 'currently in the GPU pool' },
        registeredAt: { type: 'string', format: 'date-time' },
        requests: {
          type: 'object',
          properties: {
            requests: { type: 'integer' },
            inputs: { type: 'integer' },
            errors: { type: 'integer' },
            lastRequestAt: { type: ['string', 'null'], format: 'date-time' },
          },
        },
      },
    },
    V2Tensor: {
      type: 'object',
      required: ['name', 'datatype', 'shape'],
      properties: { name: { type: 'string' }, datatype: { type: 'string' }, shape: { type: 'array', items: { type: 'integer' } } },
    },
    V2ModelMetadata: {
      type: 'object',
      required: ['name', 'platform', 'inputs', 'outputs'],
      properties: {
        name: { type: 'string' },
        versions: { type: 'array', items: { type: 'string' } },
        platform: { type: 'string' },
        inputs: { type: 'array', items: ref('V2Tensor') },
        outputs: { type: 'array', items: ref('V2Tensor') },
      },
    },
    V2InferResponse: {
      type: 'object',
      required: ['model_name', 'outputs'],
      properties: {
        model_name: { type: 'string' },
        id: { type: 'string' },
        outputs: {
          type: 'array',
          items: {
            type: 'object',
            required: ['name', 'datatype', 'shape', 'data'],
            properties: {
              name: { type: 'string', enum: ['logits', 'probabilities', 'pooler_output'] },
              datatype: { type: 'string', const: 'FP32' },
              shape: { type: 'array', items: { type: 'integer' } },
              data: { type: 'array', items: { type: 'number' }, description: 'row-major, flattened' },
            },
          },
        },
      },
    },
  };
  const predictRequest = component('PredictRequest', predictRequestSchema, schemas);
  const registerPath = component('RegisterPathRequest', registerPathSchema, schemas);
  const inferRequest = component('V2InferRequest', v2InferRequestSchema, schemas);

  const paths: Json = {
    '/v1/tasks/{task}/predict': {
      post: {
        summary: "Classify texts or token ids with a task or the base model's own head (or embed them, when it has no classifier)",
        security: API_KEY,
        parameters: [MODEL_PARAM],
        requestBody: { required: true, content: jsonContent(predictRequest) },
        responses: {
          '200': response('one output per input', ref('PredictResponse')),
          ...v1Errors(400, 401, 403, 404, 413, 415, 422, 429, 503, 504),
        },
      },
    },
    '/v1/tasks': {
      get: {
        summary: 'List registered tasks with size, residency and request counts (admin)',
        security: ADMIN,
        responses: {
          '200': response('tasks', { type: 'object', properties: { tasks: { type: 'array', items: ref('TaskSummary') } } }),
          ...v1Errors(401, 403),
        },
      },
      post: {
        summary: 'Register a task from an uploaded archive or a server path (admin)',
        description:
          'Three forms: multipart/form-data with fields `id` and `bundle` (a .tar/.tar.gz of a PetServe bundle or PEFT adapter directory); ' +
          'a raw archive body (application/gzip, application/x-tar, application/octet-stream) with `?id=`; or application/json ' +
          '`{"id", "path"}` for a directory under server.registerRoot. The PET is validated against the base model before it becomes visible. ' +
          '`model` (field, query or JSON) names the base it is for: the encoder (default) or, when a decoder is served, the decoder (a PEFT LoRA/IA³ adapter, then answered on the OpenAI generation routes). ' +
          'Every model of the server shares one namespace of ids.',
        security: ADMIN,
        parameters: [
          { name: 'id', in: 'query', required: false, schema: { type: 'string' }, description: 'task id (raw archive bodies)' },
          { name: 'model', in: 'query', required: false, schema: { type: 'string' }, description: 'base model id (raw archive bodies); default the encoder' },
        ],
        requestBody: {
          required: true,
          content: {
            'application/json': { schema: registerPath },
            'multipart/form-data': {
              schema: {
                type: 'object',
                required: ['id', 'bundle'],
                properties: { id: { type: 'string' }, model: { type: 'string' }, bundle: { type: 'string', contentMediaType: 'application/gzip' } },
              },
            },
            'application/gzip': { schema: { type: 'string', contentMediaType: 'application/gzip' } },
            'application/x-tar': { schema: { type: 'string', contentMediaType: 'application/x-tar' } },
          },
        },
        responses: {
          '201': response('registered', ref('TaskSummary')),
          ...v1Errors(400, 401, 403, 409, 413, 415, 422),
        },
      },
    },
    '/v1/tasks/{task}': {
      get: {
        summary: 'One task (admin)',
        security: ADMIN,
        parameters: [TASK_PARAM],
        responses: { '200': response('task', ref('TaskSummary')), ...v1Errors(401, 403, 404) },
      },
      delete: {
        summary: 'Unregister a task once its in-flight requests finish (admin); uploaded files are removed',
        security: ADMIN,
        parameters: [TASK_PARAM],
        responses: {
          '200': response('deleted', { type: 'object', properties: { id: { type: 'string' }, deleted: { type: 'boolean' } } }),
          // 409 BASE_MODEL: the base model's id names no task.
          ...v1Errors(401, 403, 404, 409),
        },
      },
    },
    '/v2': { get: { summary: 'Server metadata (Open Inference Protocol)', responses: { '200': response('metadata', { type: 'object' }) } } },
    '/v2/health/live': { get: { summary: 'Liveness', responses: { '200': response('live', { type: 'object', properties: { live: { type: 'boolean' } } }) } } },
    '/v2/health/ready': {
      get: {
        summary: 'Readiness (503 while shutting down)',
        responses: {
          '200': response('ready', { type: 'object', properties: { ready: { type: 'boolean' } } }),
          '503': response('not ready', { type: 'object', properties: { ready: { type: 'boolean' } } }),
        },
      },
    },
    '/v2/models/{task}': {
      get: { summary: 'Model (task) metadata', security: API_KEY, parameters: [MODEL_PARAM], responses: { '200': response('metadata', ref('V2ModelMetadata')), ...v2Errors(401, 404) } },
    },
    '/v2/models/{task}/ready': {
      get: {
        summary: 'Model (task) readiness',
        security: API_KEY,
        parameters: [MODEL_PARAM],
        responses: { '200': response('ready', { type: 'object', properties: { name: { type: 'string' }, ready: { type: 'boolean' } } }), ...v2Errors(401, 404, 503) },
      },
    },
    '/v2/models/{task}/infer': {
      post: {
        summary: 'Inference: input_ids INT64 [B, L] (optional attention_mask, token_type_ids) or text BYTES [B]; outputs logits / probabilities FP32 [B, labels] or pooler_output FP32 [B, hidden]',
        security: API_KEY,
        parameters: [MODEL_PARAM],
        requestBody: { required: true, content: jsonContent(inferRequest) },
        responses: { '200': response('outputs', ref('V2InferResponse')), ...v2Errors(400, 401, 403, 404, 413, 415, 429, 503, 504) },
      },
    },
    '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
    '/openapi.json': { get: { summary: 'This document', responses: { '200': response('OpenAPI 3.1', { type: 'object' }) } } },
  };

  return {
    openapi: '3.1.0',
    info: {
      title: 'PetServe',
      version: SERVER_VERSION,
      description: 'Many parameter-efficient fine-tuned tasks over one shared BERT on WebGPU. Errors: {"error": {"code", "message"}} (/v1), {"error": "message"} (/v2).',
    },
    paths,
    components: {
      schemas,
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'server.adminToken' },
        apiKey: { type: 'http', scheme: 'bearer', description: 'one of server.apiKeys (required only when keys are configured)' },
      },
    },
  };
}
