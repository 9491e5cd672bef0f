// One answer of the predict API for one input: the online route
// (POST /v1/tasks/:task/predict, one entry of `outputs`) and each result line
// of an offline batch (`response`) are built here, so the two cannot differ.

import type { InferenceResult } from '../scheduler/types.js';
import { softmax, type ServedModel } from './gateway.js';
import type { ClassificationOutput, EmbeddingOutput } from './outputs.js';

/** Labels with probabilities for a classifier (task or base model), the pooled output for an embedding one (numLabels 0). */
export function predictOutput(task: ServedModel, r: InferenceResult, returnLogits: boolean): ClassificationOutput | EmbeddingOutput {
  if (task.numLabels === 0) {
    if (!r.pooled) throw new Error(`embedding task '${task.id}' answered without a pooled output`);
    return { embedding: Array.from(r.pooled) };
  }
  if (!r.logits) throw new Error(`classification task '${task.id}' answered without logits`);
  const probs = softmax(r.logits);
  let best = 0;
  for (let i = 1; i < probs.length; i++) if (probs[i]! > probs[best]!) best = i;
  const labelOf = (i: number): string => task.id2label[i] ?? `LABEL_${i}`;
  const out: ClassificationOutput = {
    label: labelOf(best),
    score: probs[best]!,
    scores: Object.fromEntries(probs.map((p, i) => [labelOf(i), p])),
  };
  if (returnLogits) out.logits = Array.from(r.logits);
  return out;
}
