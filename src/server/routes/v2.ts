// Open Inference Protocol (KServe V2) over REST: each registered task is a model, and so is the base model (model.id).

import { Router, type NextFunction, type Request, type Response } from 'express';
import { RequestValidationError, RouteNotFoundError, toHttpFailure } from '../errors.js';
import { softmax, type InferenceGateway, type Sequence, type ServedModel } from '../../gateway/gateway.js';
import type { ServerLifecycle } from '../lifecycle.js';
import { jsonBody } from '../middleware/json-body.js';
import {
  V2_INPUT,
  V2_OUTPUT,
  v2InferRequestSchema,
  type V2ErrorBody,
  type V2InferResponse,
  type V2ModelMetadata,
  type V2RequestInput,
  type V2ResponseOutput,
} from '../protocol/v2.js';
import type { TaskRequestCounters } from '../task-counters.js';
import { parseOrThrow } from '../validate.js';
import { integerMatrix, maskedLengths, stringVector } from '../v2-tensors.js';
import { SERVER_NAME, SERVER_VERSION } from '../version.js';

export interface V2RouteDeps {
  gateway: InferenceGateway;
  counters: TaskRequestCounters;
  lifecycle: ServerLifecycle;
  maxBodyBytes: number;
  /**
   * Readiness of optional parts (e.g. the Redis batch queue), reported beside
   * `ready`; they do not make the server unready, since online inference does
   * not need them.
   */
  readinessParts?: (() => Record<string, unknown>) | undefined;
}

export function v2Router(deps: V2RouteDeps): Router {
  const router = Router();
  const { gateway, lifecycle } = deps;

  router.get('/v2', (_req, res) => {
    res.json({ name: SERVER_NAME, version: SERVER_VERSION, extensions: [] });
  });
  router.get('/v2/health/live', (_req, res) => {
    res.json({ live: true });
  });
  // Not ready (draining) is 503, as KServe answers an unready model, so load balancers stop routing here.
  router.get('/v2/health/ready', (_req, res) => {
    const parts = deps.readinessParts?.();
    res.status(lifecycle.ready ? 200 : 503).json({ ready: lifecycle.ready, ...(parts ? { parts } : {}) });
  });
  router.get('/v2/models/:task', async (req, res) => {
    res.json(modelMetadata(await gateway.modelFor(String(req.params['task'])), gateway));
  });
  router.get('/v2/models/:task/ready', async (req, res) => {
    const task = await gateway.modelFor(String(req.params['task']));
    res.status(lifecycle.ready ? 200 : 503).json({ name: task.id, ready: lifecycle.ready });
  });
  router.post('/v2/models/:task/infer', ...jsonBody(deps.maxBodyBytes), async (req: Request, res: Response) => {
    const task = await gateway.modelFor(String(req.params['task']));
    let inputs = 0;
    let ok = false;
    try {
      const body = parseOrThrow(v2InferRequestSchema, req.body);
      const wanted = requestedOutputs(task, body.outputs?.map((o) => o.name));
      const sequences = decodeInputs(gateway, body.inputs, body.parameters?.truncate ?? false);
      inputs = sequences.length;
      const results = await gateway.run(task, sequences, { deadlineMs: body.parameters?.deadline_ms });
      const B = results.length;
      const outputs: V2ResponseOutput[] = [];
      for (const name of wanted) {
        if (name === V2_OUTPUT.pooled) {
          const H = gateway.modelConfig.hiddenSize;
          outputs.push({ name, datatype: 'FP32', shape: [B, H], data: results.flatMap((r) => Array.from(r.pooled!)) });
        } else {
          const L = task.numLabels;
          const rows = results.map((r) => (name === V2_OUTPUT.logits ? Array.from(r.logits!) : softmax(r.logits!)));
          outputs.push({ name, datatype: 'FP32', shape: [B, L], data: rows.flat() });
        }
      }
      const response: V2InferResponse = { model_name: task.id, ...(body.id !== undefined ? { id: body.id } : {}), outputs };
      res.json(response);
      ok = true;
    } finally {
      deps.counters.record(task.id, inputs, ok);
    }
  });
  router.all('/v2/{*rest}', (req) => {
    throw new RouteNotFoundError(req.method, req.path);
  });
  // The protocol's error body is {"error": "<message>"}; statuses from errors.ts.
  router.use('/v2', (err: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    const failure = toHttpFailure(err, { protocol: 'v2' });
    if (failure.unexpected) req.log.error({ err }, 'unexpected error');
    else if (failure.code === 'CLIENT_ABORTED') req.log.info('client closed the connection before its request was complete');
    const body: V2ErrorBody = { error: failure.message };
    res.set(failure.headers).status(failure.status).json(body);
  });
  return router;
}

function outputNames(task: ServedModel): string[] {
  return task.numLabels === 0 ? [V2_OUTPUT.pooled] : [V2_OUTPUT.logits, V2_OUTPUT.probabilities];
}

function requestedOutputs(task: ServedModel, names: string[] | undefined): string[] {
  const available = outputNames(task);
  if (names === undefined || names.length === 0) return available;
  names.forEach((n, i) => {
    if (!available.includes(n)) throw new RequestValidationError(`outputs[${i}].name is not an output of model '${task.id}' (${available.join(', ')})`);
  });
  return [...new Set(names)];
}

function modelMetadata(task: ServedModel, gateway: InferenceGateway): V2ModelMetadata {
  const H = gateway.modelConfig.hiddenSize;
  const inputs: V2ModelMetadata['inputs'] = [
    { name: V2_INPUT.inputIds, datatype: 'INT64', shape: [-1, -1] },
    { name: V2_INPUT.tokenTypeIds, datatype: 'INT64', shape: [-1, -1] },
    { name: V2_INPUT.attentionMask, datatype: 'INT64', shape: [-1, -1] },
  ];
  if (gateway.hasTokenizer) inputs.push({ name: V2_INPUT.text, datatype: 'BYTES', shape: [-1] });
  const outputs: V2ModelMetadata['outputs'] = outputNames(task).map((name) => ({
    name,
    datatype: 'FP32',
    shape: name === V2_OUTPUT.pooled ? [-1, H] : [-1, task.numLabels],
  }));
  return { name: task.id, versions: [], platform: `${SERVER_NAME}_${task.kind}`, inputs, outputs };
}

/** text (BYTES [B]) or input_ids (INT64 [B, L]) with optional attention_mask / token_type_ids of the same shape. */
function decodeInputs(gateway: InferenceGateway, inputs: V2RequestInput[], truncate: boolean): Sequence[] {
  const byName = new Map<string, V2RequestInput>();
  const known = new Set<string>(Object.values(V2_INPUT));
  for (const [i, input] of inputs.entries()) {
    if (!known.has(input.name)) throw new RequestValidationError(`inputs[${i}].name is not an input of this model (inputs: ${[...known].join(', ')})`);
    if (byName.has(input.name)) throw new RequestValidationError(`input '${input.name}' given twice`);
    byName.set(input.name, input);
  }
  const text = byName.get(V2_INPUT.text);
  const ids = byName.get(V2_INPUT.inputIds);
  if ((text === undefined) === (ids === undefined)) {
    throw new RequestValidationError(`give exactly one of the inputs '${V2_INPUT.text}' (BYTES) or '${V2_INPUT.inputIds}' (INT64)`);
  }
  const mask = byName.get(V2_INPUT.attentionMask);
  const types = byName.get(V2_INPUT.tokenTypeIds);
  if (text !== undefined) {
    if (mask || types) throw new RequestValidationError(`'${V2_INPUT.attentionMask}' and '${V2_INPUT.tokenTypeIds}' go with '${V2_INPUT.inputIds}', not '${V2_INPUT.text}'`);
    const texts = stringVector(text);
    return gateway.encodeTexts(V2_INPUT.text, texts, truncate);
  }
  const sameShape = (t: V2RequestInput): void => {
    if (t.shape.join(',') !== ids!.shape.join(',')) {
      throw new RequestValidationError(`input '${t.name}': shape [${t.shape.join(', ')}] differs from '${V2_INPUT.inputIds}' [${ids!.shape.join(', ')}]`);
    }
  };
  let rows = integerMatrix(ids!);
  gateway.checkCount(V2_INPUT.inputIds, rows.length);
  let typeRows = types ? (sameShape(types), integerMatrix(types)) : undefined;
  if (mask) {
    sameShape(mask);
    const lengths = maskedLengths(integerMatrix(mask), mask.name);
    rows = rows.map((r, i) => r.slice(0, lengths[i]));
    typeRows = typeRows?.map((r, i) => r.slice(0, lengths[i]));
  }
  return gateway.checkIds(V2_INPUT.inputIds, rows, typeRows, truncate, V2_INPUT.tokenTypeIds);
}
