import type { PhaseTiming } from '../gpu/batch-encoder.js';

/**
 * PET op class of a dispatch, from the labels bert-graph.ts gives them
 * (`l3.qkv.lora_shrink`, `l0.output.adapter_up`, `l1.qkv.sparse`, `task_heads`);
 * null = a shared op (GEMM with its task epilogue, attention, LayerNorm, ...).
 */
export function petOpClass(label: string): string | null {
  if (label === 'task_heads') return 'task_heads';
  const op = label.slice(label.lastIndexOf('.') + 1);
  if (op === 'lora_shrink' || op === 'lora_expand') return 'lora';
  if (op === 'adapter_down' || op === 'adapter_up') return 'adapter';
  if (op === 'sparse') return 'sparse';
  return null;
}

/** Split a per-dispatch profile into shared-op time and PET time per op class. */
export function deviceTimeSplit(phases: readonly PhaseTiming[]): { total: number; shared: number; pet: Record<string, number> } {
  let total = 0;
  let shared = 0;
  const pet: Record<string, number> = {};
  for (const p of phases) {
    total += p.ms;
    const cls = petOpClass(p.name);
    if (cls === null) shared += p.ms;
    else pet[cls] = (pet[cls] ?? 0) + p.ms;
  }
  return { total, shared, pet };
}
