import { Router, type Request, type Response } from 'express';
import type { InferenceGateway, Sequence } from '../../gateway/gateway.js';
import { jsonBody } from '../middleware/json-body.js';
import { predictOutput } from '../../gateway/predict-output.js';
import { predictRequestSchema, type PredictResponse } from '../protocol/v1.js';
import type { TaskRequestCounters } from '../task-counters.js';
import { parseOrThrow } from '../validate.js';

export interface PredictRouteDeps {
  gateway: InferenceGateway;
  counters: TaskRequestCounters;
  maxBodyBytes: number;
}

/** POST /v1/tasks/:task/predict — texts or token ids in, labels with probabilities (or embeddings) out; `:task` may be the base model's id. */
export function predictRouter(deps: PredictRouteDeps): Router {
  const router = Router();
  router.post('/v1/tasks/:task/predict', ...jsonBody(deps.maxBodyBytes), async (req: Request, res: Response) => {
    const task = await deps.gateway.modelFor(String(req.params['task']));
    let inputs = 0;
    let ok = false;
    try {
      const body = parseOrThrow(predictRequestSchema, req.body);
      const { truncate, return_logits: returnLogits, deadline_ms: deadlineMs } = body.options;
      let sequences: Sequence[];
      if (body.inputs !== undefined) {
        const texts = typeof body.inputs === 'string' ? [body.inputs] : body.inputs;
        sequences = deps.gateway.encodeTexts('inputs', texts, truncate);
      } else {
        sequences = deps.gateway.checkIds('input_ids', body.input_ids!, body.token_type_ids, truncate);
      }
      inputs = sequences.length;
      const results = await deps.gateway.run(task, sequences, { deadlineMs });
      const response: PredictResponse = { task: task.id, kind: task.kind, outputs: results.map((r) => predictOutput(task, r, returnLogits)) };
      res.json(response);
      ok = true;
    } finally {
      deps.counters.record(task.id, inputs, ok);
    }
  });
  return router;
}
