import type { InferenceService } from '../scheduler/types.js';
import type { InferenceGateway } from '../gateway/gateway.js';
import { predictOutput } from '../gateway/predict-output.js';
import type { ClassificationOutput, EmbeddingOutput } from '../gateway/outputs.js';
import type { StoredItem } from './types.js';

/**
 * How a worker answers one item: the same checks (task, tokenization,
 * truncation, token ids), the same engine and the same output formatting as
 * the online predict route — only the priority differs. Offline items never
 * expire: they wait for capacity that online requests leave idle.
 */
export interface ItemEngine {
  /** Input checks and tokenization shared with the online routes. */
  gateway: InferenceGateway;
  service: InferenceService;
  /** Worker processes: bring the task registry up to date for this task first (see WorkerTaskSync). */
  syncTask?: (taskId: string) => Promise<void>;
}

export async function answerItem(engine: ItemEngine, item: StoredItem): Promise<ClassificationOutput | EmbeddingOutput> {
  await engine.syncTask?.(item.t);
  const task = engine.gateway.task(item.t);
  const truncate = item.tr === true;
  const [seq] =
    item.x !== undefined
      ? engine.gateway.encodeTexts('inputs', [item.x], truncate)
      : engine.gateway.checkIds('input_ids', [item.ids ?? []], item.tt ? [item.tt] : undefined, truncate);
  const result = await engine.service.submit({
    task: task.id,
    inputIds: seq!.inputIds,
    tokenTypeIds: seq!.tokenTypeIds,
    pooled: task.numLabels === 0,
    priority: 'offline',
    dropExpired: false,
  });
  return predictOutput(task, result, item.lg === true);
}
