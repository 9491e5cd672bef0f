// What one input of a predict answers, online and in offline batches alike.

/** One answer of a classification task. */
export interface ClassificationOutput {
  label: string;
  score: number;
  scores: Record<string, number>;
  logits?: number[];
}

/** One answer of an embedding task (numLabels 0): the pooled [CLS] output. */
export interface EmbeddingOutput {
  embedding: number[];
}
